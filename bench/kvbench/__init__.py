"""The app with the benchmark's bare view: a settings module and a URL configuration layered on
the app's own (kvsite), for benchmark runs only. Nothing in app/ refers to it; a run puts this
directory on PYTHONPATH and sets DJANGO_SETTINGS_MODULE=kvbench.settings (app/bench.sh on
loopback; bench/benchmark.yml on the lab, through a runtime systemd drop-in)."""
