"""testinfra checks of the postgres_replication role: Patroni on etcd, one leader, two quorum
standbys, the REST API over TLS, exporter."""

import json
import re
import socket
import struct
import time

import pytest
import yaml

PRIMARY = "postgres_replication-pg1"
STANDBYS = ["postgres_replication-pg2", "postgres_replication-pg3"]
APP_HOST = "postgres_replication-pg3"  # also in group app: the kv role may connect from it
REPL_PASSWORD = "re'pl \"$HOME `id` :\\ 2"
APP_PASSWORD = "pa'ss \"w$rd `x` 1"

testinfra_hosts = [PRIMARY, *STANDBYS]


def psql(host, sql, db="postgres", check=True):
    """Run SQL as the postgres superuser over the local socket; rows as lists of fields."""
    cmd = host.run(
        "runuser -u postgres -- psql -X -q -A -t -F '|' -v ON_ERROR_STOP=1 -d %s -c %s", db, sql
    )
    if check:
        assert cmd.rc == 0, cmd.stderr
    return [line.split("|") for line in cmd.stdout.splitlines() if line]


# TLS as every client of the role connects: the project CA, the name checked, SCRAM channel binding
VERIFIED = "sslmode=verify-full sslrootcert=/etc/patroni/pki/ca.crt channel_binding=require"


def address(host):
    return host.run("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1").stdout.strip()


# GET argv[1] over HTTPS verified with the CA argv[2], logged in as argv[3] with password argv[4].
FETCH = (
    "import base64, ssl, sys, urllib.request as u; "
    "r = u.Request(sys.argv[1]); "
    "r.add_header('Authorization', 'Basic ' + base64.b64encode("
    "(sys.argv[3] + ':' + sys.argv[4]).encode()).decode()); "
    "print(u.urlopen(r, context=ssl.create_default_context(cafile=sys.argv[2])).read().decode())"
)


def metrics(host):
    """The exporter's metrics, over HTTPS with the scrape user (plain HTTP is refused)."""
    url = f"https://{address(host)}:9187/metrics"
    password = host.ansible.get_variables()["postgres_replication_exporter_scrape_password"]
    cmd = host.run(
        "python3 -c %s %s %s %s %s",
        FETCH,
        url,
        "/etc/prometheus-postgres-exporter/ca.crt",
        "prometheus",
        password,
    )
    assert cmd.rc == 0, cmd.stderr
    return [line for line in cmd.stdout.splitlines() if line and not line.startswith("#")]


def test_patroni_running_and_enabled(host):
    svc = host.service("patroni")
    assert svc.is_running
    assert svc.is_enabled
    # no Debian cluster of its own beside Patroni's
    assert not host.file("/etc/postgresql/15/main").exists
    exporter = host.service("prometheus-postgres-exporter")
    assert exporter.is_running
    assert exporter.is_enabled


def patronictl(host, *args):
    cmd = host.run("patronictl " + " ".join(["%s"] * len(args)), *args)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout


def test_patroni_sees_one_leader_and_two_quorum_standbys(host):
    members = {m["Member"]: m for m in json.loads(patronictl(host, "list", "-f", "json"))}
    assert sorted(members) == sorted([PRIMARY, *STANDBYS])
    assert members[PRIMARY]["Role"] == "Leader" and members[PRIMARY]["State"] == "running"
    assert not [m for m in members.values() if m.get("Pending restart")], members
    for name in STANDBYS:
        assert members[name]["Role"] == "Quorum Standby", members[name]
        assert members[name]["State"] == "streaming", members[name]


def test_dynamic_configuration(host):
    """Kept in etcd by the role: quorum commit, strict, failsafe, the documented timings."""
    config = yaml.safe_load(patronictl(host, "show-config"))
    assert config["synchronous_mode"] == "quorum"
    assert config["synchronous_mode_strict"] is True
    assert config["synchronous_node_count"] == 1
    assert config["failsafe_mode"] is True and config["check_timeline"] is True
    assert (config["ttl"], config["loop_wait"], config["retry_timeout"]) == (20, 2, 9)
    assert config["postgresql"]["use_pg_rewind"] is True
    assert config["postgresql"]["use_slots"] is True


def test_rest_api_tls_and_authentication(host):
    """Reads over TLS verified with the internal CA; unsafe endpoints refuse no credentials."""
    url = f"https://{address(host)}:8008"
    code = (
        "import ssl, sys, urllib.request, urllib.error\n"
        "ctx = ssl.create_default_context(cafile='/etc/patroni/pki/ca.crt')\n"
        "def call(method, path):\n"
        "    body = None if method == 'GET' else b'{}'\n"
        "    req = urllib.request.Request(sys.argv[1] + path, method=method, data=body)\n"
        "    try:\n"
        "        return urllib.request.urlopen(req, context=ctx, timeout=5).status\n"
        "    except urllib.error.HTTPError as exc:\n"
        "        return exc.code\n"
        "print(call('GET', '/health'), call('POST', '/restart'), call('PATCH', '/config'))\n"
    )
    cmd = host.run("python3 -c %s %s", code, url)
    assert cmd.rc == 0, cmd.stderr
    assert cmd.stdout.split() == ["200", "401", "401"]


def test_role_of_each_node(host):
    expected = "f" if host.backend.get_hostname() == PRIMARY else "t"
    assert psql(host, "SELECT pg_is_in_recovery()") == [[expected]]


def test_settings(host):
    rows = dict(
        psql(
            host,
            "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'wal_log_hints', "
            "'hot_standby', 'password_encryption', 'synchronous_standby_names', "
            "'max_slot_wal_keep_size', 'max_connections')",
        )
    )
    assert rows["wal_level"] == "replica"
    assert rows["wal_log_hints"] == "on"
    assert rows["hot_standby"] == "on"
    assert rows["password_encryption"] == "scram-sha-256"
    assert rows["max_slot_wal_keep_size"] != "-1"
    # lowered by side_effect.yml: applied everywhere by restarts, the leader last
    assert rows["max_connections"] == "150"
    # Patroni's quorum mode: ANY k (the standbys it names), k = synchronous_node_count
    ssn = rows["synchronous_standby_names"]
    if host.backend.get_hostname() == PRIMARY:
        m = re.fullmatch(r"ANY 1 \((.*)\)", ssn)
        assert m, ssn
        assert sorted(n.strip().strip('"') for n in m.group(1).split(",")) == sorted(STANDBYS)
    else:
        assert ssn == "", ssn  # Patroni sets it on the leader only
    assert psql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == [["0"]]


def test_standbys_stream_with_quorum(host):
    if host.backend.get_hostname() != PRIMARY:
        pytest.skip("checked on the primary")
    rows = psql(
        host, "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY 1"
    )
    assert rows == [[name, "streaming", "quorum"] for name in STANDBYS]
    slots = psql(host, "SELECT slot_name, slot_type, active FROM pg_replication_slots ORDER BY 1")
    assert slots == [[name.replace("-", "_"), "physical", "t"] for name in STANDBYS]


def test_remote_apply_write_is_on_the_standbys(host):
    if host.backend.get_hostname() != PRIMARY:
        pytest.skip("written on the primary")
    token = f"row-{time.time_ns()}"
    psql(
        host,
        "SET ROLE kv; CREATE TABLE IF NOT EXISTS pgr_check (v text);"
        "BEGIN; SET LOCAL synchronous_commit = remote_apply; "
        f"INSERT INTO pgr_check VALUES ('{token}'); COMMIT;",
        db="kv",
    )
    seen = []
    for name in STANDBYS:
        standby = host.get_host(f"docker://{name}")
        seen.append(
            psql(standby, f"SELECT count(*) FROM pgr_check WHERE v = '{token}'", db="kv") == [["1"]]
        )
    # ANY 1: the commit returned once at least one standby had applied it.
    assert any(seen), seen
    for name in STANDBYS:
        standby = host.get_host(f"docker://{name}")
        for _ in range(20):
            if psql(standby, f"SELECT count(*) FROM pgr_check WHERE v = '{token}'", db="kv") == [
                ["1"]
            ]:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"{name} never replayed the row")


def test_passwords_are_scram(host):
    if host.backend.get_hostname() != PRIMARY:
        pytest.skip("checked on the primary")
    rows = psql(
        host,
        "SELECT rolname, rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
        "WHERE rolname IN ('kv', 'replicator', 'rewind', 'postgres_exporter') ORDER BY 1",
    )
    assert rows == [["kv", "t"], ["postgres_exporter", "t"], ["replicator", "t"], ["rewind", "t"]]


def test_kv_role_owns_its_database_and_nothing_more(host):
    if host.backend.get_hostname() != PRIMARY:
        pytest.skip("checked on the primary")
    assert psql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'kv'") == [
        ["kv"]
    ]
    assert psql(
        host,
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = 'kv'",
    ) == [["f", "f", "f", "f", "f"]]
    # Only the read-only statistics role the app needs to read pg_stat_replication (the default of
    # postgres_replication_app_memberships).
    assert psql(
        host, "SELECT roleid::regrole FROM pg_auth_members WHERE member = 'kv'::regrole"
    ) == [["pg_read_all_stats"]]
    assert psql(
        host,
        "SELECT has_database_privilege('postgres_exporter', 'kv', 'CONNECT'), "
        "has_database_privilege('replicator', 'kv', 'CONNECT')",
    ) == [["f", "f"]]
    assert psql(host, "SELECT pg_has_role('postgres_exporter', 'pg_monitor', 'MEMBER')") == [["t"]]


def _startup_reply(addr, user, database):
    """Send a PostgreSQL startup packet; return the server's first message (type, text)."""
    params = b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", database))
    )
    body = struct.pack("!I", 196608) + params + b"\0"
    with socket.create_connection((addr, 5432), timeout=5) as sock:
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        kind = sock.recv(1)
        length = struct.unpack("!I", sock.recv(4))[0]
        payload = b""
        while len(payload) < length - 4:
            payload += sock.recv(length - 4 - len(payload))
    return kind, payload.decode(errors="replace")


def test_pg_hba_rejects_a_host_outside_the_inventory(host):
    """The docker host (the controller) is no inventory host: refused before any password."""
    if host.backend.get_hostname() != PRIMARY:
        pytest.skip("checked on the primary")
    for user, database in (
        ("kv", "kv"),
        ("replicator", "replication"),
        ("postgres_exporter", "postgres"),
    ):
        kind, text = _startup_reply(address(host), user, database)
        assert kind == b"E", (kind, text)
        assert "no pg_hba.conf entry" in text, text


def test_pg_hba_and_passwords_from_the_inventory(host):
    if host.backend.get_hostname() not in STANDBYS:
        pytest.skip("checked from the standbys")
    primary = address(host.get_host(f"docker://{PRIMARY}"))
    me = host.backend.get_hostname()
    # Replication with the stored (quoted, escaped) password works; a wrong password does not.
    ok = host.run(
        "PGPASSWORD=%s runuser -u postgres -- psql -X -At %s -c IDENTIFY_SYSTEM",
        REPL_PASSWORD,
        f"host={primary} user=replicator dbname=replication replication=true passfile=/dev/null"
        f" {VERIFIED}",
    )
    assert ok.rc == 0, ok.stderr
    bad = host.run(
        "PGPASSWORD=wrong runuser -u postgres -- psql -X -At %s -c IDENTIFY_SYSTEM",
        f"host={primary} user=replicator dbname=replication replication=true passfile=/dev/null",
    )
    assert bad.rc != 0 and "password authentication failed" in bad.stderr, bad.stderr
    # The app role from an app host (pg3 is also in group app) and from a non-app host (pg2).
    kv = host.run(
        "PGPASSWORD=%s psql -X -At %s -c 'SELECT current_user'",
        APP_PASSWORD,
        f"host={primary} user=kv dbname=kv passfile=/dev/null {VERIFIED}",
    )
    kv_wrong = host.run(
        "PGPASSWORD=wrong psql -X -At %s -c 'SELECT 1'",
        f"host={primary} user=kv dbname=kv passfile=/dev/null",
    )
    kv_other_db = host.run(
        "PGPASSWORD=%s psql -X -At %s -c 'SELECT 1'",
        APP_PASSWORD,
        f"host={primary} user=kv dbname=postgres",
    )
    assert "no pg_hba.conf entry" in kv_other_db.stderr, kv_other_db.stderr
    if me == APP_HOST:
        assert kv.rc == 0 and kv.stdout.strip() == "kv", kv.stderr
        assert "password authentication failed" in kv_wrong.stderr, kv_wrong.stderr
    else:
        assert "no pg_hba.conf entry" in kv.stderr, kv.stderr


def parse(lines):
    """Prometheus text lines -> list of (name, {label: value}, float)."""
    out = []
    for line in lines:
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        out.append((name, dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)), float(value)))
    return out


def value(samples, name, **labels):
    found = [
        v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_exporter_shows_replication(host):
    samples = parse(metrics(host))
    assert value(samples, "pg_up") == 1
    if host.backend.get_hostname() == PRIMARY:
        assert value(samples, "pgrepl_node_is_primary") == 1
        assert value(samples, "pgrepl_node_lag_seconds") == 0
        assert value(samples, "pgrepl_quorum_required") == 1
        assert value(samples, "pgrepl_quorum_streaming_standbys") == 2
        for standby in STANDBYS:
            assert (
                value(
                    samples,
                    "pgrepl_standby_replay_lag_bytes",
                    application_name=standby,
                    sync_state="quorum",
                )
                >= 0
            )
            assert value(samples, "pgrepl_slot_active", slot_name=standby.replace("-", "_")) == 1
    else:
        assert value(samples, "pgrepl_node_is_primary") == 0
        assert value(samples, "pgrepl_node_standby_streaming") == 1
        assert value(samples, "pgrepl_node_lag_seconds") >= 0
        leader = [
            m for m in json.loads(patronictl(host, "list", "-f", "json")) if m["Role"] == "Leader"
        ]
        assert value(samples, "pgrepl_node_timeline") == leader[0]["TL"]
        assert not [n for n, _, _ in samples if n.startswith(("pgrepl_quorum_", "pgrepl_standby_"))]
