"""testinfra checks of the Prometheus side of prometheus_grafana on the monitoring host."""

import json
import time
import urllib.parse

import pytest

from tests import host_http

testinfra_hosts = ["prometheus_grafana-mon1"]

MON = "prometheus_grafana-mon1"
HOSTS = [MON, "prometheus_grafana-node1"]


def address(host):
    """The host's internal address: the first of `hostname -I` (the scenario's network)."""
    return host.check_output("hostname -I").split()[0]


CA = "/etc/prometheus/pki/ca.crt"
SCRAPE_PASSWORD = "/etc/prometheus/pki/scrape-password"
# Runs on the host (python3 is on every host; curl is not): one request, the answer as JSON.


def fetch(host, url, method="GET", login=True, ca=CA, data=None, user="prometheus", password=None):
    """One request from inside the host; by default as the scrape user (its password is on the
    host), login=False for none."""
    if not login:
        user = password = None
    elif password is None:
        password = host.file(SCRAPE_PASSWORD).content_string
    return host_http.request(host, url, method=method, user=user, password=password, ca=ca,
                             data=data)


def get_json(host, url):
    """GET url over HTTPS (verified with the project CA, basic auth) and decode JSON."""
    answer = fetch(host, url)
    assert answer["status"] == 200, answer
    return json.loads(answer["body"])


@pytest.fixture
def mon(host):
    return host


@pytest.mark.parametrize("name", ["prometheus", "prometheus-alertmanager"])
def test_service_running_and_enabled(mon, name):
    svc = mon.service(name)
    assert svc.is_running and svc.is_enabled


def test_configs_valid(mon):
    mon.check_output("promtool check config /etc/prometheus/prometheus.yml")
    mon.check_output("promtool check rules /etc/prometheus/rules/kv.rules.yml")
    mon.check_output("amtool check-config /etc/prometheus/alertmanager.yml")


def test_retention_and_listen_address(mon):
    args = mon.file("/etc/default/prometheus").content_string
    assert "--storage.tsdb.retention.time=2d" in args
    assert "--storage.tsdb.retention.size=512MB" in args
    flags = get_json(mon, f"https://{address(mon)}:9090/api/v1/status/flags")["data"]
    assert flags["storage.tsdb.retention.time"] == "2d"
    assert flags["storage.tsdb.retention.size"] in ("512MB", "512MiB")  # MB is read as MiB
    assert flags["web.listen-address"] == f"{address(mon)}:9090"


def test_every_expected_target_is_up(mon):
    """Every generated target is up: nodes of both hosts, Prometheus and Alertmanager themselves.
    Jobs of roles this scenario does not deploy (kv, postgres, nginx) have no targets."""
    expected = {("node", f"{h}:9100") for h in HOSTS} | {
        ("prometheus", f"{MON}:9090"),
        ("alertmanager", f"{MON}:9093"),
    }
    url = f"https://{address(mon)}:9090/api/v1/targets?state=active"
    deadline = time.monotonic() + 60  # the first scrape comes within one 5s interval
    while True:
        targets = get_json(mon, url)["data"]["activeTargets"]
        seen = {(t["labels"]["job"], t["labels"]["instance"]): t for t in targets}
        healthy = {k for k, t in seen.items() if t["health"] == "up"}
        if healthy == expected and set(seen) == expected:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"targets not all up after 60s: expected {sorted(expected)}, got "
                + str({k: (t["health"], t["lastError"]) for k, t in seen.items()})
            )
        time.sleep(2)
    for (job, instance), t in seen.items():
        assert t["labels"]["host"] == instance.split(":")[0], (job, t["labels"])
        assert t["scrapeUrl"].startswith("https://"), (job, t["scrapeUrl"])  # TLS + basic auth
    # {host!=""}: the package's own first start scraped localhost with Debian's default config;
    # those series stay visible for 5 minutes after the restart (no staleness marker at shutdown)
    query = urllib.parse.quote('up{host!=""}')
    up = get_json(mon, f"https://{address(mon)}:9090/api/v1/query?query={query}")["data"]["result"]
    assert {(r["metric"]["job"], r["metric"]["instance"]) for r in up} == expected
    assert all(r["value"][1] == "1" for r in up)


def test_empty_jobs_have_target_files(mon):
    for job in ("kv", "postgres", "nginx", "etcd", "patroni"):
        content = mon.file(f"/etc/prometheus/file_sd/{job}.yml").content_string
        assert content.rstrip().endswith("[]"), content


def test_project_ca_certificate_for_the_https_jobs(mon):
    """The CA certificate (role pki, entry point ca_cert) the patroni job verifies targets with."""
    ca = mon.file("/etc/prometheus/pki/ca.crt")
    assert ca.exists
    assert (ca.user, ca.group, ca.mode) == ("root", "prometheus", 0o644)
    assert ca.content_string.startswith("-----BEGIN CERTIFICATE-----")
    config = mon.file("/etc/prometheus/prometheus.yml").content_string
    assert "ca_file: /etc/prometheus/pki/ca.crt" in config
    assert "insecure_skip_verify" not in config


def test_alert_rules_loaded(mon):
    groups = get_json(mon, f"https://{address(mon)}:9090/api/v1/rules?type=alert")["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"HostDown", "TargetDown", "KVHighErrorRatio", "PostgresQuorumStandbysBelowK"} <= names
    assert all(r["health"] == "ok" for g in groups for r in g["rules"])


def test_alertmanager_config_and_discovery(mon):
    status = get_json(mon, f"https://{address(mon)}:9093/api/v2/status")
    config = status["config"]["original"]
    assert "http://127.0.0.1:5001/kv-alerts" in config
    assert 'alertname="HostDown"' in config
    ams = get_json(mon, f"https://{address(mon)}:9090/api/v1/alertmanagers")["data"]
    assert [a["url"] for a in ams["activeAlertmanagers"]] == [
        f"https://{address(mon)}:9093/api/v2/alerts"
    ]


@pytest.mark.parametrize("port", [9090, 9093, 9100])
def test_plain_http_anonymous_and_unverified_clients_are_refused(mon, port):
    """Every listener of the monitoring host: HTTPS only, a login required, a certificate of the
    project CA (a client trusting only the system's CAs refuses it)."""
    path = "/metrics"
    plain = fetch(mon, f"http://{address(mon)}:{port}{path}", login=False)
    assert plain["status"] != 200, plain  # Go answers plain HTTP on a TLS port with 400
    anonymous = fetch(mon, f"https://{address(mon)}:{port}{path}", login=False)
    assert anonymous["status"] == 401, anonymous
    wrong = fetch(mon, f"https://{address(mon)}:{port}{path}", password="not-the-password")
    assert wrong["status"] == 401, wrong
    unverified = fetch(mon, f"https://{address(mon)}:{port}{path}", ca=None)
    assert unverified["status"] is None and "CERTIFICATE_VERIFY_FAILED" in unverified["error"]
    assert fetch(mon, f"https://{address(mon)}:{port}{path}")["status"] == 200


def test_the_ui_user_logs_in_to_prometheus_and_alertmanager(mon):
    password = mon.ansible.get_variables()["prometheus_grafana_ui_password"]
    for port in (9090, 9093):
        url = f"https://{address(mon)}:{port}/-/ready"
        assert fetch(mon, url, user="ops", password=password)["status"] == 200
        # each user has its own password
        assert fetch(mon, url, password=password)["status"] == 401


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
def test_prometheus_lifecycle_and_admin_endpoints_are_off(mon, path, status, says):
    """Even with a valid login, Prometheus refuses to stop, reload or change its TSDB over HTTP."""
    # the flags first: with the lifecycle API on, the POST below would stop Prometheus
    flags = get_json(mon, f"https://{address(mon)}:9090/api/v1/status/flags")["data"]
    assert (flags["web.enable-lifecycle"], flags["web.enable-admin-api"]) == ("false", "false")
    answer = fetch(mon, f"https://{address(mon)}:9090{path}", method="POST")
    assert (answer["status"], says in answer["body"]) == (status, True), answer
    assert mon.service("prometheus").is_running


def test_grafana_skip_recorded(mon):
    fact = json.loads(mon.file("/etc/ansible/facts.d/prometheus_grafana.fact").content_string)
    assert fact == {
        "skipped_components": [
            {
                "component": "grafana",
                "reason": "prometheus_grafana_grafana_enabled is false in the inventory",
            }
        ]
    }
    assert not mon.package("grafana").is_installed


def test_host_down_inhibits_that_hosts_service_alerts(mon):
    """Alerts posted to Alertmanager: HostDown on hostA mutes TargetDown on hostA, not on hostB."""
    base = f"https://{address(mon)}:9093/api/v2/alerts"
    alerts = [
        {"labels": {"alertname": "HostDown", "host": "inhibit-a", "severity": "critical"}},
        {"labels": {"alertname": "TargetDown", "host": "inhibit-a", "severity": "warning"}},
        {"labels": {"alertname": "TargetDown", "host": "inhibit-b", "severity": "warning"}},
    ]
    posted = fetch(mon, base, method="POST", data=json.dumps(alerts))
    assert posted["status"] == 200, posted
    deadline = time.monotonic() + 20
    while True:
        got = {
            (a["labels"]["alertname"], a["labels"]["host"]): a["status"]["inhibitedBy"]
            for a in get_json(mon, base)
            if a["labels"]["host"].startswith("inhibit-")
        }
        if len(got) == 3 and got[("TargetDown", "inhibit-a")]:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"inhibition not applied after 20s: {got}")
        time.sleep(1)
    assert got[("HostDown", "inhibit-a")] == []
    assert got[("TargetDown", "inhibit-b")] == []
