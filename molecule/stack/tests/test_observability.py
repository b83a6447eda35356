"""testinfra on the lab after site.yml: the certificate expiry collector runs on every host and
writes, into the node exporter's textfile directory, the expiry of every certificate role pki
registered there; Prometheus has those series for every host, the backup series of the backup
hosts and the backup, archiving and certificate alert rules.

Outside Molecule, against the lab (read-only):
    .venv/bin/pytest --hosts='ansible://all' --ansible-inventory=inventory/lab/hosts.yml \
        molecule/stack/tests/test_observability.py
"""

import calendar
import json
import re
import time
import urllib.parse

import pytest

from tests import host_http

testinfra_hosts = ["all"]

REGISTRY = "/etc/kv-pki/monitored"
TEXTFILE = "/var/lib/prometheus/node-exporter/kv-certificates.prom"
PROMETHEUS_PORT = 9090
CA_CERT = "/etc/prometheus/pki/ca.crt"
CERT_GROUPS = {"dcs", "postgres", "monitoring", "backup"}  # hosts that hold certificates of pki
SAMPLE = re.compile(r'^(\w+)\{path="([^"]*)"(?:,subject="((?:[^"\\]|\\.)*)")?\} (\S+)$', re.M)


def _vars(host):
    return host.ansible.get_variables()


def prometheus_get(host, url):
    """GET Prometheus' API from the monitoring host itself (it listens on the internal address
    only; HTTPS verified with the project CA, as the scrape user, whose password file is there)."""
    answer = host_http.request(host, url, user="prometheus",
                               password_file="/etc/prometheus/pki/scrape-password", ca=CA_CERT)
    assert answer["status"] == 200, f"{url}: {answer}"
    return answer["body"]


def registered(host):
    """Real paths of the certificates registered by pki on this host."""
    out = host.run(f"find {REGISTRY} -mindepth 1 -maxdepth 1 -type l -exec readlink -f {{}} +")
    return set(out.stdout.split())


def test_collector_units_are_scheduled(host):
    for unit in ("kv-certificate-metrics.timer", "kv-certificate-metrics.path"):
        assert host.service(unit).is_enabled, unit
        assert host.service(unit).is_running, unit
    result = host.run("systemctl show -p Result --value kv-certificate-metrics.service")
    assert result.stdout.strip() == "success"


def test_every_registered_certificate_is_published_with_its_expiry(host):
    certs = registered(host)
    if CERT_GROUPS & set(_vars(host)["group_names"]):
        assert certs, f"no certificate registered in {REGISTRY} on a host of {CERT_GROUPS}"
    metrics = host.file(TEXTFILE).content_string  # what the node exporter publishes as is
    not_after = {
        path: float(value)
        for name, path, _, value in SAMPLE.findall(metrics)
        if name == "kv_certificate_not_after_timestamp_seconds"
    }
    errors = {
        p for n, p, _, v in SAMPLE.findall(metrics) if n == "kv_certificate_read_error" and v != "0"
    }
    assert set(not_after) == certs, f"published {sorted(not_after)}, registered {sorted(certs)}"
    assert errors == set()
    for path in certs:
        end = host.check_output(f"openssl x509 -noout -enddate -in {path}").split("=", 1)[1]
        expected = calendar.timegm(time.strptime(" ".join(end.split()), "%b %d %H:%M:%S %Y GMT"))
        assert not_after[path] == expected, path
        assert not_after[path] > time.time(), f"{path} has expired"


def test_the_textfile_is_not_world_writable(host):
    f = host.file(TEXTFILE)
    assert f.exists and f.user == "root" and f.mode == 0o644


@pytest.fixture(scope="module")
def prometheus(host):
    variables = _vars(host)
    base = f"https://{variables['internal_address']}:{PROMETHEUS_PORT}"

    def query(expr):
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        answer = json.loads(prometheus_get(host, url))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    query.rules = lambda: json.loads(prometheus_get(host, f"{base}/api/v1/rules"))["data"]["groups"]
    return query


@pytest.mark.only_first_of("monitoring")  # Prometheus is queried from there
def test_prometheus_has_certificate_expiry_of_every_host(host, prometheus):
    hosts = set(_vars(host)["groups"]["all"])
    deadline = time.monotonic() + 60  # one scrape interval, with margin
    while True:
        seen = {
            r["metric"]["host"]
            for r in prometheus("kv_certificate_metrics_last_success_timestamp_seconds")
        }
        if seen == hosts or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert seen == hosts
    holders = {
        r["metric"]["host"] for r in prometheus("kv_certificate_not_after_timestamp_seconds")
    }
    groups = _vars(host)["groups"]
    expected = {h for g in CERT_GROUPS for h in groups.get(g, [])}
    assert expected <= holders


@pytest.mark.only_first_of("monitoring")
@pytest.mark.only_where(lambda host, _: bool(_vars(host)["groups"].get("backup")))
def test_prometheus_has_the_backup_series(host, prometheus):
    backup_hosts = set(_vars(host)["groups"]["backup"])
    for metric in (
        "pgbackrest_backup_last_completion_timestamp_seconds",
        "pgbackrest_stanza_status",
        "pgbackrest_repo_size_bytes",
        "pgbackrest_metrics_up",
    ):
        assert {r["metric"]["host"] for r in prometheus(metric)} == backup_hosts, metric
    up = prometheus("pgbackrest_metrics_up")
    assert {r["value"][1] for r in up} == {"1"}
    full = prometheus('pgbackrest_backup_last_completion_timestamp_seconds{type="full"}')
    assert full and all(float(r["value"][1]) > 0 for r in full)
    assert prometheus("pgrepl_archiver_archived_count"), "no pg_stat_archiver series"


@pytest.mark.only_first_of("monitoring")  # Prometheus is queried from there
def test_prometheus_loaded_the_backup_and_certificate_alerts(host, prometheus):
    names = {r["name"] for g in prometheus.rules() for r in g["rules"]}
    assert {
        "CertificateExpiresSoon",
        "CertificateExpiryUnknown",
        "PostgresWalArchivingFailing",
        "PostgresWalArchiveLag",
    } <= names
    if _vars(host)["groups"].get("backup"):
        assert {
            "PgBackRestFullBackupTooOld",
            "PgBackRestDiffBackupTooOld",
            "PgBackRestStanzaError",
            "PgBackRestMetricsStale",
        } <= names
