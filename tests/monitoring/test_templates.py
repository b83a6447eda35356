"""The prometheus_grafana templates, rendered with tests/monitoring/inventory by Ansible itself:
prometheus.yml passes `promtool check config` (which also reads the generated file_sd files and
the rules), targets follow the inventory, Grafana's provisioning matches the dashboards."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ROLE = ROOT / "roles" / "prometheus_grafana"


def _run_render(out: Path, tags: str, extra_vars: dict | None = None):
    playbook = shutil.which("ansible-playbook") or str(ROOT / ".venv" / "bin" / "ansible-playbook")
    return subprocess.run(
        [
            playbook, str(HERE / "render.yml"), "-i", str(HERE / "inventory"),
            "--tags", tags,
            "-e", f"prometheus_grafana_render_out={out / 'rendered.json'}",
            "-e", f"prometheus_grafana_rules_dir={out / 'rules'}",
            "-e", f"prometheus_grafana_file_sd_dir={out / 'file_sd'}",
            "-e", json.dumps(extra_vars or {}),
        ],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("render")
    run = _run_render(out, "prometheus_grafana_render")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = json.loads((out / "rendered.json").read_text())
    (out / "file_sd").mkdir()
    (out / "rules").mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    for rules in (ROLE / "files" / "rules").glob("*.rules.yml"):
        shutil.copy(rules, out / "rules" / rules.name)
    return out, files


def targets(files, job):
    return {
        (t["labels"]["host"], t["labels"]["instance"], target)
        for t in yaml.safe_load(files[f"file_sd/{job}.yml"]) or []
        for target in t["targets"]
    }


def test_every_template_starts_with_the_managed_header(rendered):
    _, files = rendered
    for name, text in files.items():
        assert text.lstrip("#; \n").startswith("Ansible managed"), name


def test_prometheus_config_passes_promtool(rendered):
    out, _ = rendered
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's `prometheus` package")
    run = subprocess.run(
        [promtool, "check", "config", str(out / "prometheus.yml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_app_targets_follow_each_hosts_instances(rendered):
    _, files = rendered
    assert targets(files, "kv") == {
        ("app1", "app1:8000", "10.0.0.21:8000"),
        ("app1", "app1:8005", "10.0.0.21:8005"),  # app1 sets django_kv_instances
        ("app2", "app2:8000", "10.0.0.22:8000"),  # app2 has the default ports
        ("app2", "app2:8001", "10.0.0.22:8001"),
        ("app2", "app2:8002", "10.0.0.22:8002"),
    }


def test_the_role_alone_scrapes_the_jobs_own_ports(tmp_path):
    """Without per-host ports (the role alone) every app host gets the kv job's default ports:
    the role reads no other role's variables (app1's own instance list in the inventory)."""
    run = _run_render(tmp_path, "prometheus_grafana_render", {"prometheus_grafana_job_ports": {}})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = json.loads((tmp_path / "rendered.json").read_text())
    assert targets(files, "kv") == {
        (h, f"{h}:{p}", f"10.0.0.{n}:{p}") for h, n in (("app1", 21), ("app2", 22))
        for p in (8000, 8001, 8002)
    }


def test_preflight_passes_the_topologys_job_ports(tmp_path):
    run = _run_render(tmp_path, "prometheus_grafana_preflight")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Check the per-host ports of the jobs" in run.stdout


@pytest.mark.parametrize(
    "job_ports",
    [
        ["kv"],
        {"web": {"app1": [8000]}},
        {"kv": [8000]},
        {"kv": {"app3": [8000]}},
        {"kv": {"mon1": [8000]}},
        {"kv": {"app1": []}},
        {"kv": {"app1": 8000}},
        {"kv": {"app1": [8000, 8000]}},
        {"kv": {"app1": [0]}},
        {"kv": {"app1": ["metrics"]}},
    ],
    ids=["not-a-map", "unknown-job", "hosts-not-a-map", "unknown-host", "host-outside-group",
         "no-ports", "ports-not-a-list", "duplicate-port", "port-out-of-range",
         "port-not-a-number"],
)  # fmt: skip
def test_preflight_refuses_malformed_job_ports(tmp_path, job_ports):
    run = _run_render(tmp_path, "prometheus_grafana_preflight",
                      {"prometheus_grafana_job_ports": job_ports})
    assert run.returncode != 0
    if isinstance(job_ports, dict):
        assert "prometheus_grafana_job_ports maps a job's name" in run.stdout
        assert "playbooks/vars/topology.yml" in run.stdout  # where the project sets it
    else:  # the role's argument spec refuses it first
        assert "argument 'prometheus_grafana_job_ports' is of type list" in run.stdout


def test_exporter_targets_by_group(rendered):
    _, files = rendered
    assert {t[2] for t in targets(files, "node")} == {
        f"10.0.0.{n}:9100" for n in (10, 21, 22, 31, 32, 41)
    }
    assert {t[2] for t in targets(files, "postgres")} == {"10.0.0.31:9187", "10.0.0.32:9187"}
    assert targets(files, "nginx") == {("lb1", "lb1:9113", "10.0.0.10:9113")}
    assert targets(files, "prometheus") == {("mon1", "mon1:9090", "10.0.0.41:9090")}
    assert targets(files, "alertmanager") == {("mon1", "mon1:9093", "10.0.0.41:9093")}


def test_patroni_is_scraped_over_https_verified_with_the_project_ca(rendered):
    _, files = rendered
    assert targets(files, "patroni") == {
        ("pg1", "pg1:8008", "10.0.0.31:8008"),
        ("pg2", "pg2:8008", "10.0.0.32:8008"),
    }
    jobs = {j["job_name"]: j for j in yaml.safe_load(files["prometheus.yml"])["scrape_configs"]}
    assert jobs["patroni"]["scheme"] == "https"
    # the CA certificate role pki's ca_cert entry point installs; never insecure_skip_verify
    assert jobs["patroni"]["tls_config"] == {"ca_file": "/etc/prometheus/pki/ca.crt"}
    assert "basic_auth" not in jobs["patroni"]  # Patroni's GET /metrics needs no login


def test_the_monitoring_plane_is_scraped_over_https_with_basic_auth(rendered):
    _, files = rendered
    config = yaml.safe_load(files["prometheus.yml"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    login = {"username": "prometheus", "password_file": "/etc/prometheus/pki/scrape-password"}
    tls = {"ca_file": "/etc/prometheus/pki/ca.crt"}
    for name in ("prometheus", "alertmanager", "node", "postgres", "nginx"):
        assert jobs[name]["scheme"] == "https", name
        assert jobs[name]["tls_config"] == tls, name  # verified, never insecure_skip_verify
        assert jobs[name]["basic_auth"] == login, name  # the password stays out of prometheus.yml
    https = {n for n, j in jobs.items() if j.get("scheme") == "https"}
    # plain HTTP on the internal address (README.md, "Security"): the app's gunicorn listeners and
    # etcd's metrics listener (the nginx exporter is published by nginx with TLS and a login)
    assert set(jobs) - https == {"kv", "etcd"}
    (am,) = config["alerting"]["alertmanagers"]
    assert (am["scheme"], am["tls_config"], am["basic_auth"]) == ("https", tls, login)
    assert "scrape-password-1" not in files["prometheus.yml"]


def test_prometheus_arguments(rendered):
    _, files = rendered
    lines = files["prometheus.default"].splitlines()
    args = next(line for line in lines if line.startswith("ARGS="))
    for flag in (
        "--storage.tsdb.retention.time=15d",
        "--storage.tsdb.retention.size=5GB",
        "--web.listen-address=10.0.0.41:9090",
        "--web.config.file=/etc/prometheus/pki/prometheus-web.json",
        "--web.external-url=https://10.0.0.41:9090/",
    ):
        assert flag in args
    # /-/quit, /-/reload and the admin API (snapshots, series deletion) stay off
    assert "--web.enable-lifecycle" not in args
    assert "--web.enable-admin-api" not in args
    am_args = files["prometheus-alertmanager.default"]
    assert "--web.config.file=/etc/prometheus/pki/alertmanager-web.json" in am_args
    assert "--web.external-url=https://10.0.0.41:9093/" in am_args
    assert '--cluster.listen-address="' in files["prometheus-alertmanager.default"]  # no gossip


def test_alertmanager_routes_and_inhibition(rendered):
    _, files = rendered
    config = yaml.safe_load(files["alertmanager.yml"])
    assert config["route"]["receiver"] in {r["name"] for r in config["receivers"]}
    host_down = config["inhibit_rules"][0]
    assert host_down["source_matchers"] == ['alertname="HostDown"']
    assert host_down["equal"] == ["host"]
    # Patroni's view of a member mutes the exporter's alerts about the same host
    rules = {r["source_matchers"][0]: r for r in config["inhibit_rules"]}
    not_running = rules['alertname="PatroniPostgresNotRunning"']
    assert not_running["target_matchers"] == [
        'alertname=~"PostgresDown|PostgresStandbyNotStreaming|PatroniReplicaNotStreaming"'
    ]
    assert not_running["equal"] == ["host"]


def test_grafana_provisioning_matches_the_dashboards(rendered):
    _, files = rendered
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    datasource = yaml.safe_load(files["grafana-datasource.yml"])["datasources"][0]
    assert datasource["uid"] == defaults["prometheus_grafana_grafana_datasource_uid"]
    assert datasource["url"] == "https://10.0.0.41:9090"
    # over TLS verified with the project CA, as the UI user
    assert datasource["basicAuth"] is True
    assert datasource["basicAuthUser"] == "ops"
    assert datasource["jsonData"]["tlsAuthWithCACert"] is True
    assert "tlsSkipVerify" not in datasource["jsonData"]
    assert datasource["secureJsonData"] == {
        "basicAuthPassword": "ui 'pass\" $x 2",
        "tlsCACert": "$__file{/etc/grafana/pki/ca.crt}",
    }
    provider = yaml.safe_load(files["grafana-dashboards.yml"])["providers"][0]
    assert provider["options"]["path"] == defaults["prometheus_grafana_grafana_dashboards_dir"]
    ini = files["grafana.ini"]
    assert 'admin_password = """pa\'ss "w$rd `x` 1"""' in ini  # quotes, $ and backticks intact
    assert "[auth.anonymous]\nenabled = false" in ini
    server = ini.split("[server]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert server == [
        "protocol = https",
        "http_addr = 10.0.0.41",
        "http_port = 3000",
        "cert_file = /etc/grafana/pki/server.crt",
        "cert_key = /etc/grafana/pki/server.key",
        "min_tls_version = TLS1.3",
    ]


def test_a_job_whose_group_is_empty_has_an_empty_target_file(rendered):
    """The inventory here has no dcs group: the etcd job still gets its target file, an empty
    list, so Prometheus loads every job whatever groups the inventory holds."""
    _, files = rendered
    assert files["file_sd/etcd.yml"].rstrip().endswith("[]"), files["file_sd/etcd.yml"]
    assert yaml.safe_load(files["file_sd/etcd.yml"]) == []
