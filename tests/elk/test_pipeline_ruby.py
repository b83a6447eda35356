"""The pipeline's Ruby snippets run for real (Ruby, with a stand-in for Logstash's Event) on the
app's and nginx's sample lines: dotted keys nest, durations become integer nanoseconds, the URL
splits into path and query."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from . import nginx_log_lines
from .conftest import HERE
from .logstash_config import Branch, Plugin, branches_by_value, parse

FIXTURES = HERE / "fixtures"


def _ruby_plugins(items, out):
    for item in items:
        if isinstance(item, Plugin) and item.name == "ruby":
            out.append(item)
        elif isinstance(item, Branch):
            for _, body in item.clauses:
                _ruby_plugins(body, out)
    return out


@pytest.fixture(scope="module")
def ruby_code(renders) -> dict[str, str]:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (apt-get install ruby): the pipeline's Ruby did NOT run")
    render = renders["lab-like"]
    host = render.hosts_with("logstash-kv.conf")[0]
    cfg = parse(render.files[host]["logstash-kv.conf"])
    return {p.get("id"): p.get("code") for p in _ruby_plugins(cfg.sections["filter"], [])}


def run_ruby(code: str, events: list[dict]) -> list[dict]:
    done = subprocess.run(
        ["ruby", str(HERE / "ruby_event.rb")],
        input=json.dumps({"code": code, "events": events}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, f"the pipeline's Ruby failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def test_app_fields_nest(ruby_code):
    lines = (FIXTURES / "app.jsonl").read_text().splitlines()
    events = [{"message": x, "@metadata": {"line": json.loads(x)}} for x in lines if x.strip()]
    out = run_ruby(ruby_code["kv_app_fields"], events)
    for before, after in zip(events, out, strict=True):
        line = before["@metadata"]["line"]
        assert after["log"]["level"] == line["log.level"]
        assert after["message"] == line["message"]
        assert after["log"]["logger"] == line["log.logger"]
        if "http.request.id" in line:
            assert after["http"]["request"]["id"] == line["http.request.id"]
        if "event.duration" in line:
            assert after["event"]["duration"] == line["event.duration"]
            assert after["http"]["response"]["status_code"] == line["http.response.status_code"]
        assert "log.level" not in after  # no dotted key left at the root
        assert "@timestamp" not in after  # the date filter sets it


def test_app_fields_nest_mixed_dotted_and_nested_keys(ruby_code):
    line = {"log.level": "info", "log": {"logger": "kv"}, "http": {"request.id": "r1"}}
    (after,) = run_ruby(ruby_code["kv_app_fields"], [{"@metadata": {"line": line}}])
    assert after["log"] == {"level": "info", "logger": "kv"}
    assert after["http"] == {"request": {"id": "r1"}}


def test_nginx_durations_and_url(ruby_code):
    lines = nginx_log_lines.lines() or (FIXTURES / "nginx.jsonl").read_text().splitlines()
    events = [{"@metadata": {"line": json.loads(x)}} for x in lines if x.strip()]
    out = run_ruby(ruby_code["kv_nginx_url_and_durations"], events)
    for before, after in zip(events, out, strict=True):
        line = before["@metadata"]["line"]
        seconds = float(line["request_time"])
        assert isinstance(after["event"]["duration"], int)
        assert after["event"]["duration"] == round(seconds * 1_000_000_000)
        path, _, query = str(line["uri"]).partition("?")
        assert after["url"]["path"] == path
        assert after["url"].get("query", "") == query
        upstream = [
            float(v)
            for v in str(line["upstream_response_time"]).replace(":", ",").split(",")
            if v.strip()
        ]
        if upstream:
            assert after["nginx"]["upstream"]["response_time"] == pytest.approx(sum(upstream))
        else:
            assert "upstream" not in after.get("nginx", {})


def test_index_template_maps_numbers_as_numbers(renders):
    """What the pipeline turns into numbers is mapped as a number, not as text."""
    render = renders["lab-like"]
    host = render.hosts_with("logstash-kv.conf")[0]
    mappings = render.api[host]["index_template"]["template"]["mappings"]

    def mapped(path):
        node = mappings
        for part in path:
            node = node["properties"][part]
        return node["type"]

    cfg = parse(render.files[host]["logstash-kv.conf"])
    numeric = {("event", "duration"), ("nginx", "upstream", "response_time")}
    for bf in branches_by_value(cfg, "[fields][log_type]").values():
        numeric |= {p for p, kind in bf.converts if kind in ("integer", "float")}
    for p in sorted(numeric):
        if p[0] == "@metadata":
            continue
        assert mapped(p) in ("long", "integer", "double", "float"), p
    assert mapped(("@timestamp",)) == "date"
    assert mapped(("http", "request", "id")) == "keyword"
