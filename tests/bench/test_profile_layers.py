"""bench/profile_layers.py on hand-made py-spy raw stacks: a sample is charged to the innermost
frame that belongs to a layer (standard-library frames charge their caller), and a layer's
Python CPU per request is its samples / rate / requests."""

import pytest

from bench import profile_layers

ROOTS = ('process 10:"gunicorn";process 11:"gunicorn";run (threading.py:982);'
         "handle (gunicorn/workers/gthread.py:553);__call__ (django/core/handlers/wsgi.py:124)")
RAW = "\n".join([
    ROOTS + ";__call__ (kv/middleware.py:40);emit (logging/__init__.py:1113) 3",
    ROOTS + ";format (kv/logjson.py:50);iterencode (json/encoder.py:258) 2",
    ROOTS + ";__call__ (kv/httpmetrics.py:80);inc (prometheus_client/values.py:104) 4",
    ROOTS + ";__call__ (kv/httpmetrics.py:80);labels (lib/python3.11/threading.py:90) 1",
    ROOTS + ";get (kv/views.py:130);gather (kv/fanout.py:221) 6",
    ROOTS + ";get (kv/views.py:130);execute (psycopg2/extras.py:10) 2",
    ROOTS + ";dispatch (rest_framework/views.py:509) 5",
    ROOTS + " 7",
    'process 10:"gunicorn";select (selectors.py:468) 1',
])


def test_each_sample_goes_to_its_innermost_layer():
    got = profile_layers.parse_raw(RAW)
    assert got == {
        "logging (kv.logjson, logging)": 5,
        "metrics (prometheus_client)": 4,
        "metrics (kv.httpmetrics, django_prometheus)": 1,
        "KV engine (kv.*)": 6,
        "psycopg2": 2,
        "DRF (rest_framework)": 5,
        "Django handler, URL resolver, request/response": 7,
        profile_layers.OTHER: 1,
    }


def test_breakdown_per_request(tmp_path):
    (tmp_path / "get_one.1.txt").write_text(RAW)
    (tmp_path / "get_one.1.wrk").write_text(
        "  Latency Distribution\n     50%    2.00ms\n     99%   10.00ms\n"
        "  100 requests in 1.00s, 1.00MB read\n")
    (tmp_path / "get_one.1.cpu").write_text("0.2\n")
    b = profile_layers.breakdown(str(tmp_path))["get_one"]
    assert b["samples"] == 31
    assert b["cpu_ms_per_request"] == pytest.approx(2.0)
    assert b["python_ms_per_request"] == pytest.approx(31 / profile_layers.RATE * 1000 / 100)
    share, ms = b["layers"]["Django handler, URL resolver, request/response"]
    assert share == pytest.approx(7 / 31)
    assert ms == pytest.approx(7 / profile_layers.RATE * 1000 / 100)
