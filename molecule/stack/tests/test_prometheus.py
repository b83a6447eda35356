"""testinfra on the lab's monitoring host: Prometheus and Alertmanager as role prometheus_grafana
configures them from the inventory (configs valid, retention and listen address, every target of
every job up over HTTPS, rules loaded and healthy, Alertmanager discovered and inhibiting, the UI
user's own login, Grafana either running or recorded as skipped with its reason).

The listeners' refusals (plain HTTP, anonymous, untrusting clients) and the lifecycle and admin
endpoints are in test_monitoring_tls.py.
"""

import json
import re
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests import host_http

testinfra_hosts = ["monitoring"]

ROOT = Path(__file__).resolve().parents[3]
DEFAULTS = yaml.safe_load((ROOT / "roles/prometheus_grafana/defaults/main.yml").read_text())
CA = "/etc/prometheus/pki/ca.crt"
SCRAPE_PASSWORD = "/etc/prometheus/pki/scrape-password"
WAIT = 90  # seconds: every target is scraped within a few 15 s intervals


def setting(host, name):
    """The inventory's value of a variable, else the role's default; a value that only names
    another variable ("{{ vault_x }}", as the lab's secrets.yml does) is that variable's value."""
    variables = host.ansible.get_variables()
    value = variables.get(name, DEFAULTS.get(name))
    match = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", str(value))
    return variables[match.group(1)] if match else value


def fetch(host, url, method="GET", user="prometheus", password=None, data=None):
    """One request from inside the host, verified with the project CA; as the scrape user (its
    password read on the host) unless another login is given."""
    return host_http.request(host, url, method=method, user=user, password=password,
                             password_file=None if password else SCRAPE_PASSWORD, ca=CA,
                             data=data)


def get_json(host, url):
    answer = fetch(host, url)
    assert answer["status"] == 200, answer
    return json.loads(answer["body"])


def address(host):
    return host.ansible.get_variables()["internal_address"]


def test_configs_valid(host):
    host.check_output("promtool check config /etc/prometheus/prometheus.yml")
    host.check_output("promtool check rules /etc/prometheus/rules/kv.rules.yml")
    host.check_output("amtool check-config /etc/prometheus/alertmanager.yml")


def test_retention_and_listen_address(host):
    retention = setting(host, "prometheus_grafana_retention_time")
    size = setting(host, "prometheus_grafana_retention_size")
    args = host.file("/etc/default/prometheus").content_string
    assert f"--storage.tsdb.retention.time={retention}" in args
    flags = get_json(host, f"https://{address(host)}:9090/api/v1/status/flags")["data"]
    assert flags["storage.tsdb.retention.time"] == retention
    if size:
        assert f"--storage.tsdb.retention.size={size}" in args
        assert flags["storage.tsdb.retention.size"] in (size, size.replace("B", "iB"))
    else:
        assert "retention.size" not in args
    assert flags["web.listen-address"] == f"{address(host)}:9090"


def test_every_target_of_every_job_is_up_with_its_host_label(host):
    """Every generated target of every job is up, scraped over HTTPS, labelled with its host,
    and `up{host!=""}` holds exactly those targets, all 1."""
    url = f"https://{address(host)}:9090/api/v1/targets?state=active"
    deadline = time.monotonic() + WAIT
    while True:
        targets = get_json(host, url)["data"]["activeTargets"]
        seen = {(t["labels"]["job"], t["labels"]["instance"]): t for t in targets}
        if seen and all(t["health"] == "up" for t in seen.values()):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"targets not all up after {WAIT}s: "
                        + str({k: t["lastError"] for k, t in seen.items() if t["health"] != "up"}))
        time.sleep(3)
    jobs = {job for job, _ in seen}
    assert {"node", "prometheus", "alertmanager", "postgres", "patroni", "kv", "etcd"} <= jobs, jobs
    for (job, instance), t in seen.items():
        assert t["labels"]["host"] == instance.split(":")[0], (job, t["labels"])
    # the monitoring plane, the exporters and Patroni are scraped over TLS
    for job in ("node", "prometheus", "alertmanager", "postgres", "patroni"):
        urls = [t["scrapeUrl"] for (j, _), t in seen.items() if j == job]
        assert urls and all(u.startswith("https://") for u in urls), (job, urls)
    query = urllib.parse.quote('up{host!=""}')
    up = get_json(host, f"https://{address(host)}:9090/api/v1/query?query={query}")["data"]
    assert {(r["metric"]["job"], r["metric"]["instance"]) for r in up["result"]} == set(seen)
    assert all(r["value"][1] == "1" for r in up["result"])


def test_project_ca_certificate_for_the_https_jobs(host):
    ca = host.file(CA)
    assert (ca.user, ca.group, ca.mode) == ("root", "prometheus", 0o644)
    assert ca.content_string.startswith("-----BEGIN CERTIFICATE-----")
    config = host.file("/etc/prometheus/prometheus.yml").content_string
    assert f"ca_file: {CA}" in config
    assert "insecure_skip_verify" not in config


def test_alert_rules_loaded_and_healthy(host):
    groups = get_json(host, f"https://{address(host)}:9090/api/v1/rules?type=alert")
    rules = [r for g in groups["data"]["groups"] for r in g["rules"]]
    names = {r["name"] for r in rules}
    assert {"HostDown", "TargetDown", "KVHighErrorRatio", "PostgresQuorumStandbysBelowK"} <= names
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]


def test_alertmanager_config_and_discovery(host):
    status = get_json(host, f"https://{address(host)}:9093/api/v2/status")
    config = status["config"]["original"]
    assert setting(host, "prometheus_grafana_alertmanager_webhook_url") in config
    assert 'alertname="HostDown"' in config
    ams = get_json(host, f"https://{address(host)}:9090/api/v1/alertmanagers")["data"]
    assert [a["url"] for a in ams["activeAlertmanagers"]] == [
        f"https://{address(host)}:9093/api/v2/alerts"
    ]


def test_the_ui_user_logs_in_to_prometheus_and_alertmanager(host):
    password = setting(host, "prometheus_grafana_ui_password")
    for port in (9090, 9093):
        url = f"https://{address(host)}:{port}/-/ready"
        assert fetch(host, url, user="ops", password=password)["status"] == 200
        # each user has its own password
        assert fetch(host, url, password=password)["status"] == 401


def test_grafana_runs_or_its_skip_is_recorded_with_the_reason(host):
    """Grafana comes only from its vendor's repository: where that is unreachable, the role
    records the skip and why (the lab summary prints it) and installs nothing."""
    fact = json.loads(host.file("/etc/ansible/facts.d/prometheus_grafana.fact").content_string)
    skipped = {s["component"]: s["reason"] for s in fact["skipped_components"]}
    if "grafana" in skipped:
        assert skipped["grafana"], fact
        assert not host.package("grafana").is_installed
    else:
        assert host.service("grafana-server").is_running


def test_host_down_inhibits_that_hosts_service_alerts(host):
    """Alerts posted to Alertmanager: HostDown on a host mutes TargetDown on that host only. The
    hosts are names no inventory has; the alerts resolve by themselves (resolve_timeout)."""
    base = f"https://{address(host)}:9093/api/v2/alerts"
    tag = f"inhibit-{time.time_ns()}"
    alerts = [
        {"labels": {"alertname": "HostDown", "host": f"{tag}-a", "severity": "critical"}},
        {"labels": {"alertname": "TargetDown", "host": f"{tag}-a", "severity": "warning"}},
        {"labels": {"alertname": "TargetDown", "host": f"{tag}-b", "severity": "warning"}},
    ]
    posted = fetch(host, base, method="POST", data=json.dumps(alerts))
    assert posted["status"] == 200, posted
    deadline = time.monotonic() + 20
    while True:
        got = {
            (a["labels"]["alertname"], a["labels"]["host"]): a["status"]["inhibitedBy"]
            for a in get_json(host, base)
            if a["labels"].get("host", "").startswith(tag)
        }
        if len(got) == 3 and got[("TargetDown", f"{tag}-a")]:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"inhibition not applied after 20s: {got}")
        time.sleep(1)
    assert got[("HostDown", f"{tag}-a")] == []
    assert got[("TargetDown", f"{tag}-b")] == []
