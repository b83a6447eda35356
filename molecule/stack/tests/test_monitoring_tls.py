"""testinfra on the monitoring host after site.yml: every scrape target of the HTTPS jobs is `up`
over HTTPS with a login; each of those listeners refuses plain HTTP, an anonymous request, a wrong
password and a client that does not trust the project CA; Prometheus' lifecycle and admin
endpoints are off.

Outside Molecule, against the lab (read-only):
    ANSIBLE_VAULT_PASSWORD_FILE=inventory/lab/vault-password.txt .venv/bin/pytest \\
        --hosts='ansible://monitoring' --ansible-inventory=inventory/lab/hosts.yml \\
        molecule/stack/tests/test_monitoring_tls.py
"""

import json
import time
from pathlib import Path

import pytest
import yaml

from tests import host_http

testinfra_hosts = ["monitoring"]

CA = "/etc/prometheus/pki/ca.crt"
SCRAPE_PASSWORD = "/etc/prometheus/pki/scrape-password"
HTTPS_JOBS = {"prometheus", "alertmanager", "node", "postgres", "nginx"}
WAIT = 60  # seconds: every target is scraped within one 15 s interval
# Runs on the host: one request, the answer as JSON. ca None = the system's trust store.


def fetch(host, url, method="GET", login=True, ca=CA):
    return host_http.request(host, url, method=method, user="prometheus" if login else None,
                             password_file=SCRAPE_PASSWORD, ca=ca)


def prometheus(host):
    return f"https://{host.ansible.get_variables()['internal_address']}:9090"


@pytest.fixture(scope="module")
def targets(host):
    """Active targets of the HTTPS jobs, once every one is up (bounded wait)."""
    deadline = time.monotonic() + WAIT
    while True:
        answer = fetch(host, f"{prometheus(host)}/api/v1/targets?state=active")
        assert answer["status"] == 200, answer
        active = json.loads(answer["body"])["data"]["activeTargets"]
        mine = [t for t in active if t["labels"]["job"] in HTTPS_JOBS]
        if mine and all(t["health"] == "up" for t in mine):
            return mine
        if time.monotonic() > deadline:
            down = {t["scrapeUrl"]: t["lastError"] for t in mine if t["health"] != "up"}
            pytest.fail(f"targets not up after {WAIT}s: {down}")
        time.sleep(3)


def test_every_https_job_is_scraped_over_https_and_up(host, targets):
    runner = host.backend.ansible_runner
    groups = host.ansible.get_variables()["groups"]
    expected = {
        "node": set(groups["all"]),
        "postgres": set(groups["postgres"]),
        "prometheus": set(groups["monitoring"]),
        "alertmanager": set(groups["monitoring"]),
        "nginx": set(groups["lb"]),  # the exporter published by nginx (TLS, basic auth)
    }
    seen = {
        job: {t["labels"]["host"] for t in targets if t["labels"]["job"] == job} for job in expected
    }
    assert seen == expected
    for t in targets:
        address = runner.get_variables(t["labels"]["host"])["internal_address"]
        assert t["scrapeUrl"].startswith(f"https://{address}:"), t["scrapeUrl"]


def test_each_https_listener_refuses_plain_http_anonymous_and_untrusting_clients(host, targets):
    problems = []
    for t in targets:
        url = t["scrapeUrl"]
        plain = fetch(host, url.replace("https://", "http://", 1), login=False)
        anonymous = fetch(host, url, login=False)
        wrong = host_http.request(host, url, user="prometheus", password="not-the-password", ca=CA)
        untrusting = fetch(host, url, ca=None)
        if plain["status"] == 200:
            problems.append(f"{url}: plain HTTP answered 200")
        if anonymous["status"] != 401:
            problems.append(f"{url}: no login gave {anonymous}")
        if wrong["status"] != 401:
            problems.append(f"{url}: a wrong password gave {wrong}")
        if (
            untrusting["status"] is not None
            or "CERTIFICATE_VERIFY_FAILED" not in untrusting["error"]
        ):
            problems.append(f"{url}: a client without the project CA got {untrusting}")
    assert problems == []


def test_the_nginx_exporter_is_reached_only_through_nginx(host, targets):
    """The exporter itself listens on the balancer's loopback: from the monitoring host (which
    the firewall lets through to 9113) its own port gives no answer, 9113 answers with TLS."""
    runner = host.backend.ansible_runner
    defaults = yaml.safe_load(
        (Path(__file__).resolve().parents[3] / "roles/nginx/defaults/main.yml").read_text())
    seen = []
    for t in targets:
        if t["labels"]["job"] != "nginx":
            continue
        lb = runner.get_variables(t["labels"]["host"])
        port = lb.get("nginx_exporter_local_port", defaults["nginx_exporter_local_port"])
        assert t["scrapeUrl"] == f"https://{lb['internal_address']}:9113/metrics"
        direct = fetch(host, f"http://{lb['internal_address']}:{port}/metrics", login=False)
        seen.append((t["labels"]["host"], direct["status"]))
    assert seen and all(status is None for _, status in seen), seen


# Prometheus answers 403 "Lifecycle API is not enabled." and, for the admin API, 500 "admin APIs
# disabled" (errorType "unavailable": 2.42 maps it to 500), whatever the login.
@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/-/quit", 403, "Lifecycle API is not enabled"),
        ("/-/reload", 403, "Lifecycle API is not enabled"),
        ("/api/v1/admin/tsdb/snapshot", 500, "admin APIs disabled"),
        ("/api/v1/admin/tsdb/delete_series?match[]=up", 500, "admin APIs disabled"),
        ("/api/v1/admin/tsdb/clean_tombstones", 500, "admin APIs disabled"),
    ],
)
def test_prometheus_lifecycle_and_admin_endpoints_are_off(host, path, status, says):
    # the flags first: with the lifecycle API on, the POST below would stop Prometheus
    flags = json.loads(fetch(host, f"{prometheus(host)}/api/v1/status/flags")["body"])["data"]
    assert (flags["web.enable-lifecycle"], flags["web.enable-admin-api"]) == ("false", "false")
    answer = fetch(host, f"{prometheus(host)}{path}", method="POST")
    assert (answer["status"], says in answer["body"]) == (status, True), answer
    assert host.service("prometheus").is_running
