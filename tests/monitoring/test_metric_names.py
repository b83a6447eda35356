"""Every metric the alert rules and dashboards query is one that something in the stack exposes.

Names of the project's own metrics are read from their sources: the app's prometheus_client
definitions (app/kv/metrics.py) and the postgres exporter queries of role postgres_replication
(<query>_<column>). Exporter built-ins are listed here, each with its source, so that a rename on
either side fails here instead of as an empty panel or an alert that can never fire.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

from .rule_templates import rule_texts

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "prometheus_grafana"
APP_METRICS = ROOT / "app" / "kv" / "metrics.py"
PG_QUERIES = ROOT / "roles" / "postgres_replication" / "templates" / "queries.yaml.j2"
CERT_COLLECTOR = ROOT / "roles" / "node_exporter" / "files" / "kv_certificate_metrics.py"

BUILTIN = {
    "up",
    # django-prometheus middleware (counters carry _total; histogram series _bucket/_sum/_count)
    "django_http_responses_total_by_status_total",
    "django_http_requests_latency_seconds_by_view_method_bucket",
    # prometheus-postgres-exporter 0.11 (Debian 12) default metrics
    "pg_up",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_numbackends",
    "pg_stat_database_tup_inserted",
    "pg_stat_database_tup_updated",
    "pg_stat_database_tup_deleted",
    "pg_settings_archive_timeout_seconds",  # pg_settings, every setting with a unit in seconds
    # prometheus-nginx-exporter 0.11 (stub_status)
    "nginx_up",
    "nginx_http_requests_total",
    "nginx_connections_active",
    "nginx_connections_reading",
    "nginx_connections_writing",
    "nginx_connections_waiting",
    "nginx_connections_accepted",
    "nginx_connections_handled",
    # etcd 3.4 (Debian 12's etcd-server), its metrics listener
    "etcd_server_has_leader",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_server_quota_backend_bytes",
    # Patroni 4.1 REST API /metrics (patroni/api.py, do_GET_metrics; labels scope, name)
    "patroni_version",
    "patroni_postgres_running",
    "patroni_postmaster_start_time",
    "patroni_primary",
    "patroni_xlog_location",
    "patroni_standby_leader",
    "patroni_replica",
    "patroni_sync_standby",
    "patroni_quorum_standby",
    "patroni_xlog_received_location",
    "patroni_xlog_replayed_location",
    "patroni_xlog_replayed_timestamp",
    "patroni_xlog_paused",
    "patroni_postgres_streaming",
    "patroni_postgres_in_archive_recovery",
    "patroni_postgres_server_version",
    "patroni_cluster_unlocked",
    "patroni_failsafe_mode_is_active",
    "patroni_failsafe_mode_enabled",
    "patroni_failsafe_member",
    "patroni_postgres_timeline",
    "patroni_dcs_last_seen",
    "patroni_pending_restart",
    "patroni_is_paused",
    "patroni_postgres_state",
    "patroni_failover_priority",
    # prometheus-node-exporter 1.5
    "node_cpu_seconds_total",
    "node_load1",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_readonly",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    # role pgbackrest's metrics script on the backup hosts (textfile collector; names fixed in
    # its README)
    "pgbackrest_backup_last_completion_timestamp_seconds",
    "pgbackrest_backup_last_size_bytes",
    "pgbackrest_repo_size_bytes",
    "pgbackrest_stanza_status",
    "pgbackrest_metrics_last_success_timestamp_seconds",
    "pgbackrest_metrics_up",
}

KEYWORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan", "le",
}  # fmt: skip


def app_metrics():
    names = set()
    source = APP_METRICS.read_text()
    for kind, name in re.findall(r"(Counter|Gauge|Histogram)\(\s*\"(\w+)\"", source):
        if kind == "Counter":
            names.add(name if name.endswith("_total") else name + "_total")
        elif kind == "Histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def postgres_metrics():
    text = "\n".join(
        line for line in PG_QUERIES.read_text().splitlines() if not line.startswith("{{")
    )
    names = set()
    for query, spec in yaml.safe_load(text).items():
        for metric in spec["metrics"]:
            for column, attrs in metric.items():
                if attrs["usage"] != "LABEL":
                    names.add(f"{query}_{column}")
    return names


def certificate_metrics():
    """The names the node exporter's certificate expiry collector writes (its HEADER table)."""
    return set(re.findall(r'^    "(kv_certificate_\w+)"', CERT_COLLECTOR.read_text(), re.M))


def metric_names(expr):
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group(0).lower() in KEYWORDS:
            continue  # a function or a keyword
        if re.match(r"\d", expr[m.start() - 1 : m.start()] or " "):
            continue  # a unit of a number (1e3) or duration
        names.add(m.group(0))
    return names


def queried():
    out = []
    for name, text in sorted(rule_texts().items()):
        for group in yaml.safe_load(text)["groups"]:
            for rule in group["rules"]:
                out.append((f"{name}:{rule.get('alert') or rule.get('record')}", rule["expr"]))
    for f in sorted((ROLE / "files" / "dashboards").glob("*.json")):
        dash = json.loads(f.read_text())
        stack = list(dash["panels"])
        while stack:
            p = stack.pop()
            stack += p.get("panels", [])
            out += [(f"{f.name}:{p['title']}", t["expr"]) for t in p.get("targets", [])]
    return out


@pytest.fixture(scope="module")
def known():
    if not PG_QUERIES.exists():
        pytest.fail(f"{PG_QUERIES} is missing: the pgrepl_* metric names come from it")
    return BUILTIN | app_metrics() | postgres_metrics() | certificate_metrics()


def test_sources_define_the_metrics_the_rules_rely_on(known):
    assert "kv_quorum_operations_total" in known
    assert {"pgrepl_node_is_primary", "pgrepl_quorum_required", "pgrepl_slot_active"} <= known
    assert {"pgrepl_archiver_failed_count", "pgrepl_archiver_ready_count"} <= known
    assert {"kv_certificate_not_after_timestamp_seconds", "kv_certificate_files"} <= known


@pytest.mark.parametrize(("where", "expr"), queried(), ids=[w for w, _ in queried()])
def test_every_queried_metric_is_exposed(known, where, expr):
    unknown = metric_names(expr) - known
    assert not unknown, f"{where} queries metrics nothing exposes: {sorted(unknown)}"
