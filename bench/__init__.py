"""The benchmark's scripts. A package so that tests import them (``from bench import report``);
each also runs as a file (``python bench/report.py``)."""
