"""testinfra on the monitoring host after site.yml: Prometheus scrapes Patroni's REST API on every
PostgreSQL host over HTTPS, verified with the project CA, every `patroni` target is up, and the
members it scrapes report one cluster with exactly one leader and streaming replicas.

Outside Molecule, against the lab (read-only):
    .venv/bin/pytest --hosts='ansible://monitoring' --ansible-inventory=inventory/lab/hosts.yml \
        molecule/stack/tests/test_patroni_monitoring.py
"""

import json
import time
import urllib.parse

import pytest
import yaml

from tests import host_http

testinfra_hosts = ["monitoring"]

PATRONI_PORT = 8008
PROMETHEUS_PORT = 9090
CA_CERT = "/etc/prometheus/pki/ca.crt"
WAIT = 60  # seconds: a target is scraped within one 15 s interval; a member settles within ttl


def _address(host):
    return host.ansible.get_variables()["internal_address"]


@pytest.fixture(scope="module")
def members(host):
    """inventory name -> internal address of every host of group postgres."""
    runner = host.backend.ansible_runner
    names = host.ansible.get_variables()["groups"]["postgres"]
    return {name: runner.get_variables(name)["internal_address"] for name in names}


def get_json(host, path):
    """GET Prometheus' API from the monitoring host itself (it listens on the internal address
    only; HTTPS verified with the project CA, as the scrape user, whose password file is on the
    host) and decode the JSON."""
    url = f"https://{_address(host)}:{PROMETHEUS_PORT}{path}"
    answer = host_http.request(host, url, user="prometheus",
                               password_file="/etc/prometheus/pki/scrape-password", ca=CA_CERT)
    assert answer["status"] == 200, f"{url}: {answer}"
    return json.loads(answer["body"])


def query(host, expr):
    answer = get_json(host, "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_patroni_job_verifies_with_the_project_ca(host):
    ca = host.file(CA_CERT)
    assert (ca.user, ca.group, ca.mode) == ("root", "prometheus", 0o644)
    config = yaml.safe_load(get_json(host, "/api/v1/status/config")["data"]["yaml"])
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "patroni")
    assert job["scheme"] == "https"
    assert job["tls_config"]["ca_file"] == CA_CERT
    assert job["tls_config"].get("insecure_skip_verify") is not True


def test_every_patroni_target_is_up(host, members):
    expected = {
        name: f"https://{address}:{PATRONI_PORT}/metrics" for name, address in members.items()
    }
    deadline = time.monotonic() + WAIT
    while True:
        targets = get_json(host, "/api/v1/targets?state=active")["data"]["activeTargets"]
        patroni = {t["labels"]["host"]: t for t in targets if t["labels"]["job"] == "patroni"}
        seen = {name: t["scrapeUrl"] for name, t in patroni.items()}
        if seen == expected and all(t["health"] == "up" for t in patroni.values()):
            break
        if time.monotonic() > deadline:
            got = {n: (t["scrapeUrl"], t["health"], t["lastError"]) for n, t in patroni.items()}
            pytest.fail(f"patroni targets not all up after {WAIT}s: expected {expected}, got {got}")
        time.sleep(3)
    up = query(host, 'up{job="patroni"}')
    assert {r["metric"]["host"]: r["value"][1] for r in up} == {name: "1" for name in members}


def test_members_report_one_leader_and_streaming_replicas(host, members):
    deadline = time.monotonic() + WAIT
    while True:
        role = {
            r["metric"]["name"]: (r["metric"]["scope"], r["value"][1])
            for r in query(host, 'patroni_primary{job="patroni"}')
        }
        streaming = {
            r["metric"]["name"]: r["value"][1]
            for r in query(
                host,
                'patroni_postgres_streaming{job="patroni"}'
                ' and on (instance) (patroni_replica{job="patroni"} == 1)',
            )
        }
        leaders = [name for name, (_, value) in role.items() if value == "1"]
        if (
            set(role) == set(members)
            and len(leaders) == 1
            and set(streaming) == set(members) - set(leaders)
            and all(v == "1" for v in streaming.values())
        ):
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"after {WAIT}s the Patroni members {sorted(members)} do not report one leader and "
                f"streaming replicas: primary {role}, replicas streaming {streaming}"
            )
        time.sleep(3)
    assert {scope for scope, _ in role.values()} == {"kv"}
