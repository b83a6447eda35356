"""testinfra checks of the elk role: services, TLS, users, API objects, and an app log line found
in Elasticsearch by its request id."""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid
from pathlib import Path

import pytest
from kv import logjson  # app/kv, on pytest's pythonpath (pyproject.toml)

testinfra_hosts = ["all"]
REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
CA = "/etc/elk-pki/ca.crt"


def _vars(host):
    return host.ansible.get_variables()


def _is(host, group):
    return group in _vars(host).get("group_names", [])


@pytest.fixture
def log1(host):
    return host.get_host("ansible://elk-log1", ansible_inventory=host.backend.ansible_inventory)


def _api(log1, method, path, user="elastic", password=None, body=None, port=9200):
    password = password if password is not None else _vars(log1)["elk_elastic_password"]
    cmd = "curl -sS --cacert %s -u %s -X %s -H 'Content-Type: application/json' "
    cmd += "-H 'kbn-xsrf: true' "
    args = [CA, f"{user}:{password}", method]
    if body is not None:
        cmd += "--data-binary %s "
        args.append(json.dumps(body))
    cmd += "-w '\\n%%{http_code}' %s"
    args.append(f"https://elk-log1:{port}{path}")
    out = log1.run(cmd, *args)
    assert out.rc == 0, out.stderr
    text, _, status = out.stdout.rpartition("\n")
    return int(status), (json.loads(text) if text.strip().startswith(("{", "[")) else text)


def test_passwords_are_the_hard_ones(host):
    for name in (
        "elk_elastic_password",
        "elk_kibana_system_password",
        "elk_logstash_writer_password",
    ):
        value = _vars(host)[name]
        assert all(c in value for c in "'\"$` "), f"{name} lost a character: {value!r}"


def test_services(host):
    if _is(host, "logging"):
        for name in ("elasticsearch", "logstash", "kibana"):
            assert host.service(name).is_running and host.service(name).is_enabled, name
        listening = host.socket.get_listening_sockets()
        for port in (9200, 9300, 5044, 5601):
            assert any(s.endswith(f":{port}") for s in listening), (port, listening)
    if _is(host, "app") or _is(host, "lb"):
        assert host.service("filebeat").is_running


def test_ca_key_stays_on_the_ca_host(host):
    assert host.file("/etc/elk-pki/host.key").mode == 0o600
    ca_key = host.file("/etc/elk-pki/ca/ca.key")
    if _is(host, "logging"):
        assert ca_key.exists and ca_key.mode == 0o600
    else:
        assert not ca_key.exists


def test_no_password_in_config_files(host):
    secrets = [
        _vars(host)[k]
        for k in (
            "elk_elastic_password",
            "elk_kibana_system_password",
            "elk_logstash_writer_password",
        )
    ]
    for path in (
        "/etc/elasticsearch/elasticsearch.yml",
        "/etc/kibana/kibana.yml",
        "/etc/logstash/conf.d/kv.conf",
        "/etc/filebeat/filebeat.yml",
    ):
        f = host.file(path)
        if f.exists:
            content = f.content_string
            assert not any(s in content for s in secrets), path


def test_security_is_on(host, log1):
    if not _is(host, "logging"):
        pytest.skip("Elasticsearch runs on the logging host")
    out = log1.run(
        "curl -sS -o /dev/null -w '%%{http_code}' --cacert %s %s", CA, "https://elk-log1:9200/"
    )
    assert out.stdout == "401"
    for user, key in (
        ("elastic", "elk_elastic_password"),
        ("kibana_system", "elk_kibana_system_password"),
        ("logstash_writer", "elk_logstash_writer_password"),
    ):
        status, body = _api(
            log1, "GET", "/_security/_authenticate", user=user, password=_vars(log1)[key]
        )
        assert status == 200 and body["username"] == user


def test_ilm_retention_and_template(host, log1):
    if not _is(host, "logging"):
        pytest.skip("checked once, on the logging host")
    status, body = _api(log1, "GET", "/_ilm/policy/kv-logs")
    assert status == 200
    assert body["kv-logs"]["policy"]["phases"]["delete"]["min_age"] == "3d"
    status, body = _api(log1, "GET", "/_index_template/kv-logs")
    assert status == 200


def test_kibana_objects(host, log1):
    if not _is(host, "logging"):
        pytest.skip("checked once, on the logging host")
    status, _ = _api(log1, "GET", "/api/data_views/data_view/kv-logs", port=5601)
    assert status == 200
    for search in ("kv-errors", "kv-slow-requests"):
        status, _ = _api(log1, "GET", f"/api/saved_objects/search/{search}", port=5601)
        assert status == 200, search


def _app_line(rid: str) -> str:
    """A line written by the app's own formatter (app/kv/logjson.py) for a request."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logjson.EcsJsonFormatter())
    log = logging.getLogger("kv.access.molecule")
    log.propagate = False
    log.addHandler(handler)
    token = logjson.request_id.set(rid)
    try:
        log.warning(
            "PUT /kv/molecule 201",
            extra={
                "ecs": {
                    "event.duration": 1234567,
                    "http.request.method": "PUT",
                    "url.path": "/kv/molecule",
                    "http.response.status_code": 201,
                }
            },
        )
    finally:
        logjson.request_id.reset(token)
    return stream.getvalue().strip()


def test_app_line_reaches_elasticsearch_with_its_request_id(host, log1):
    if not _is(host, "app"):
        pytest.skip("the app's log is shipped from the app host")
    rid = uuid.uuid4().hex
    line = _app_line(rid)
    host.run("printf '%%s\\n' %s >> /var/log/kv/kv-8000.log", line)
    deadline = time.monotonic() + 180
    hits = []
    while time.monotonic() < deadline:
        status, body = _api(log1, "GET", f"/logs-kv.app-*/_search?q=http.request.id:{rid}")
        hits = body.get("hits", {}).get("hits", []) if status == 200 else []
        if hits:
            break
        time.sleep(5)
    assert hits, f"the app line with request id {rid} did not reach Elasticsearch in 180 s"
    doc = hits[0]["_source"]
    assert doc["http"]["request"]["id"] == rid
    assert doc["http"]["response"]["status_code"] == 201
    assert doc["event"]["duration"] == 1234567
    assert doc["log"]["level"] == "warning"
    assert doc["data_stream"]["dataset"] == "kv.app"
    assert doc["@timestamp"] == json.loads(line)["@timestamp"]


def test_nginx_line_reaches_elasticsearch(host, log1):
    if not _is(host, "lb"):
        pytest.skip("nginx's log is shipped from the lb host")
    rid = uuid.uuid4().hex
    sample = (REPO / "tests/elk/fixtures/nginx.jsonl").read_text().splitlines()[0]
    doc = json.loads(sample)
    doc["request_id"] = rid
    host.run("printf '%%s\\n' %s >> /var/log/nginx/kv_access.json", json.dumps(doc))
    deadline = time.monotonic() + 180
    hits = []
    while time.monotonic() < deadline:
        status, body = _api(log1, "GET", f"/logs-kv.nginx-*/_search?q=http.request.id:{rid}")
        hits = body.get("hits", {}).get("hits", []) if status == 200 else []
        if hits:
            break
        time.sleep(5)
    assert hits, f"the nginx line with request id {rid} did not reach Elasticsearch in 180 s"
    src = hits[0]["_source"]
    assert isinstance(src["http"]["response"]["status_code"], int)
    assert isinstance(src["event"]["duration"], int)
