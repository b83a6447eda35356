"""testinfra on the PostgreSQL hosts after site.yml: Patroni on etcd, one leader and quorum
standbys, the dynamic configuration the role keeps, the REST API over TLS with authentication,
the roles and their privileges, pg_hba from the inventory, quorum commit with remote_apply, the
exporter. The lab's database passwords carry quotes, a dollar, spaces, backticks, a colon and a
backslash (inventory/lab/group_vars/all/vault.yml): every client below logs in with them.

The leader is whichever member Patroni reports: the stack tests move it, and these checks hold
for any member in either role. The checks of the cluster as a whole run once, from the first
member, on the leader or the standbys they name. Outside Molecule, against the lab (read-only
but for one row in a table of its own):
    .venv/bin/pytest --hosts='ansible://postgres' --ansible-inventory=inventory/lab/hosts.yml \
        molecule/stack/tests/test_postgres_replication.py
"""

import json
import re
import socket
import struct
import time

import pytest
import yaml

testinfra_hosts = ["postgres"]

# TLS as every client of the role connects: the project CA, the name checked, SCRAM channel binding
VERIFIED = "sslmode=verify-full sslrootcert=/etc/patroni/pki/ca.crt channel_binding=require"
SPECIAL = set("'\"$ `:\\")  # what the lab's database passwords must contain


def psql(host, sql, db="postgres", check=True):
    """Run SQL as the postgres superuser over the local socket; rows as lists of fields."""
    cmd = host.run(
        "runuser -u postgres -- psql -X -q -A -t -F '|' -v ON_ERROR_STOP=1 -d %s -c %s", db, sql
    )
    if check:
        assert cmd.rc == 0, cmd.stderr
    return [line.split("|") for line in cmd.stdout.splitlines() if line]


def patronictl(host, *args):
    cmd = host.run("patronictl " + " ".join(["%s"] * len(args)), *args)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout


@pytest.fixture(scope="module")
def cluster(host):
    """Patroni's members by name, as this host's Patroni sees them."""
    return {m["Member"]: m for m in json.loads(patronictl(host, "list", "-f", "json"))}


@pytest.fixture(scope="module")
def leader(cluster):
    (name,) = [n for n, m in cluster.items() if m["Role"] == "Leader"]
    return name


@pytest.fixture(scope="module")
def members(host):
    """inventory name -> internal address of every host of group postgres."""
    runner = host.backend.ansible_runner
    names = host.ansible.get_variables()["groups"]["postgres"]
    return {name: runner.get_variables(name)["internal_address"] for name in names}


@pytest.fixture(scope="module")
def secrets(host):
    return host.ansible.get_variables()


def peer(host, name):
    """Another lab host, reached the way testinfra reaches this one."""
    backend = host.backend
    return backend.ansible_runner.get_host(
        name, ssh_config=backend.ssh_config, ssh_identity_file=backend.ssh_identity_file
    )


def me(host):
    return host.backend.get_hostname()


@pytest.fixture(scope="module")
def on_leader(host, leader):
    """The leader, for the checks of the cluster as a whole (run once, from the first member)."""
    return peer(host, leader)


@pytest.mark.only_first_of("postgres")
def test_the_lab_passwords_carry_every_special_character(secrets):
    for name in ("vault_kv_db_password", "vault_replication_password", "vault_rewind_password",
                 "vault_exporter_db_password", "vault_patroni_rest_password",
                 "vault_monitoring_scrape_password"):
        assert set(secrets[name]) >= SPECIAL, name


def test_patroni_and_exporter_running_and_enabled(host):
    for name in ("patroni", "prometheus-postgres-exporter"):
        svc = host.service(name)
        assert svc.is_running and svc.is_enabled, name
    # no Debian cluster of its own beside Patroni's
    assert not host.file("/etc/postgresql/15/main").exists


def test_one_leader_and_quorum_standbys(cluster, members):
    assert sorted(cluster) == sorted(members)
    roles = sorted(m["Role"] for m in cluster.values())
    assert roles == ["Leader"] + ["Quorum Standby"] * (len(members) - 1), cluster
    assert all(m["State"] in ("running", "streaming") for m in cluster.values()), cluster
    assert not [m for m in cluster.values() if m.get("Pending restart")], cluster


def test_dynamic_configuration(host, members):
    """Kept in etcd by the role: quorum commit, strict, failsafe, the documented timings."""
    config = yaml.safe_load(patronictl(host, "show-config"))
    assert config["synchronous_mode"] == "quorum"
    assert config["synchronous_mode_strict"] is True
    assert config["synchronous_node_count"] == len(members) // 2
    assert config["failsafe_mode"] is True and config["check_timeline"] is True
    assert (config["ttl"], config["loop_wait"], config["retry_timeout"]) == (20, 2, 9)
    assert config["postgresql"]["use_pg_rewind"] is True
    assert config["postgresql"]["use_slots"] is True


def test_rest_api_tls_and_authentication(host, members):
    """Reads over TLS verified with the internal CA; unsafe endpoints refuse no credentials and
    a wrong password, and take the inventory's (special characters and all): a reload, which
    re-reads an unchanged configuration."""
    code = (
        "import base64, ssl, sys, urllib.request, urllib.error\n"
        "ctx = ssl.create_default_context(cafile='/etc/patroni/pki/ca.crt')\n"
        "def call(method, path, password=None):\n"
        "    req = urllib.request.Request(sys.argv[1] + path, method=method, data=b'{}')\n"
        "    if password is not None:\n"
        "        token = base64.b64encode(('patroni:' + password).encode()).decode()\n"
        "        req.add_header('Authorization', 'Basic ' + token)\n"
        "    try:\n"
        "        return urllib.request.urlopen(req, context=ctx, timeout=5).status\n"
        "    except urllib.error.HTTPError as exc:\n"
        "        return exc.code\n"
        "req = urllib.request.Request(sys.argv[1] + '/health')\n"
        "health = urllib.request.urlopen(req, context=ctx, timeout=5).status\n"
        "print(health, call('POST', '/restart'), call('PATCH', '/config'),"
        " call('POST', '/restart', 'wrong'), call('POST', '/reload', sys.argv[2]))\n"
    )
    password = host.ansible.get_variables()["vault_patroni_rest_password"]
    cmd = host.run("python3 -c %s %s %s", code, f"https://{members[me(host)]}:8008", password)
    assert cmd.rc == 0, cmd.stderr
    assert cmd.stdout.split() == ["200", "401", "401", "401", "202"]


def test_role_of_each_node(host, leader):
    expected = "f" if me(host) == leader else "t"
    assert psql(host, "SELECT pg_is_in_recovery()") == [[expected]]


def test_settings(host, leader, members):
    rows = dict(
        psql(
            host,
            "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'wal_log_hints', "
            "'hot_standby', 'password_encryption', 'synchronous_standby_names', "
            "'max_slot_wal_keep_size')",
        )
    )
    assert rows["wal_level"] == "replica"
    assert rows["wal_log_hints"] == "on"
    assert rows["hot_standby"] == "on"
    assert rows["password_encryption"] == "scram-sha-256"
    assert rows["max_slot_wal_keep_size"] != "-1"
    # Patroni's quorum mode: ANY k (the standbys it names), k = synchronous_node_count
    ssn = rows["synchronous_standby_names"]
    if me(host) == leader:
        m = re.fullmatch(rf"ANY {len(members) // 2} \((.*)\)", ssn)
        assert m, ssn
        named = sorted(n.strip().strip('"') for n in m.group(1).split(","))
        assert named == sorted(set(members) - {leader})
    else:
        assert ssn == "", ssn  # Patroni sets it on the leader only
    assert psql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == [["0"]]


@pytest.mark.only_first_of("postgres")
def test_standbys_stream_with_quorum(on_leader, leader, members):
    standbys = sorted(set(members) - {leader})
    rows = psql(
        on_leader, "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY 1"
    )
    assert rows == [[name, "streaming", "quorum"] for name in standbys]
    slots = psql(on_leader, "SELECT slot_name, slot_type, active FROM pg_replication_slots"
                       " WHERE slot_type = 'physical' ORDER BY 1")
    assert slots == [[name.replace("-", "_"), "physical", "t"] for name in standbys]


@pytest.mark.only_first_of("postgres")
def test_remote_apply_write_is_on_the_standbys(host, on_leader, leader, members):
    token = f"row-{time.time_ns()}"
    psql(
        on_leader,
        "SET ROLE kv; CREATE TABLE IF NOT EXISTS pgr_check (v text);"
        "BEGIN; SET LOCAL synchronous_commit = remote_apply; "
        f"INSERT INTO pgr_check VALUES ('{token}'); COMMIT;",
        db="kv",
    )
    query = f"SELECT count(*) FROM pgr_check WHERE v = '{token}'"
    standbys = [peer(host, name) for name in sorted(set(members) - {leader})]
    # ANY k: the commit returned once at least k standbys had applied it.
    seen = [psql(standby, query, db="kv") == [["1"]] for standby in standbys]
    assert sum(seen) >= len(members) // 2, seen
    for standby in standbys:
        for _ in range(20):
            if psql(standby, query, db="kv") == [["1"]]:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"{me(standby)} never replayed the row")
    psql(on_leader, f"SET ROLE kv; DELETE FROM pgr_check WHERE v = '{token}'", db="kv")


@pytest.mark.only_first_of("postgres")
def test_passwords_are_scram(on_leader):
    rows = psql(
        on_leader,
        "SELECT rolname, rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
        "WHERE rolname IN ('kv', 'replicator', 'rewind', 'postgres_exporter') ORDER BY 1",
    )
    assert rows == [["kv", "t"], ["postgres_exporter", "t"], ["replicator", "t"], ["rewind", "t"]]


@pytest.mark.only_first_of("postgres")
def test_kv_role_owns_its_database_and_nothing_more(on_leader):
    host = on_leader
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


def test_pg_hba_rejects_a_host_outside_the_inventory(host, members):
    """The controller (the docker host) is no inventory host: refused before any password."""
    for user, database in (
        ("kv", "kv"),
        ("replicator", "replication"),
        ("postgres_exporter", "postgres"),
    ):
        kind, text = _startup_reply(members[me(host)], user, database)
        assert kind == b"E", (kind, text)
        assert "no pg_hba.conf entry" in text, text


@pytest.mark.only_first_of("postgres")
def test_pg_hba_and_passwords_from_the_inventory(host, leader, members, secrets):
    """From every standby: replication with the inventory's password works, a wrong one does not;
    the rewind role logs in; the app's role is refused from a host outside group app (its password
    is tested from the app hosts by test_pg_tls_app.py)."""
    primary = members[leader]
    for name in sorted(set(members) - {leader}):
        standby = peer(host, name)
        ok = standby.run(
            "PGPASSWORD=%s runuser -u postgres -- psql -X -At %s -c IDENTIFY_SYSTEM",
            secrets["vault_replication_password"],
            f"host={primary} user=replicator dbname=replication replication=true"
            f" passfile=/dev/null {VERIFIED}",
        )
        assert ok.rc == 0, (name, ok.stderr)
        bad = standby.run(
            "PGPASSWORD=wrong runuser -u postgres -- psql -X -At %s -c IDENTIFY_SYSTEM",
            f"host={primary} user=replicator dbname=replication replication=true"
            f" passfile=/dev/null {VERIFIED}",
        )
        assert bad.rc != 0 and "password authentication failed" in bad.stderr, (name, bad.stderr)
        rewind = standby.run(
            "PGPASSWORD=%s runuser -u postgres -- psql -X -At %s -c 'SELECT current_user'",
            secrets["vault_rewind_password"],
            f"host={primary} user=rewind dbname=postgres passfile=/dev/null {VERIFIED}",
        )
        assert rewind.rc == 0 and rewind.stdout.strip() == "rewind", (name, rewind.stderr)
        kv = standby.run(
            "PGPASSWORD=%s psql -X -At %s -c 'SELECT current_user'",
            secrets["vault_kv_db_password"],
            f"host={primary} user=kv dbname=kv passfile=/dev/null {VERIFIED}",
        )
        assert kv.rc != 0 and "no pg_hba.conf entry" in kv.stderr, (name, kv.stderr)


def test_exporter_logs_in_with_the_inventory_password(host):
    """The exporter's own database login, as the exporter's user: its libpq password file (the
    inventory's password, colon and backslash escaped) and its copy of the CA."""
    conf = "/etc/prometheus-postgres-exporter"
    cmd = host.run(
        "runuser -u prometheus -- env PGPASSFILE=%s psql -X -At %s -c 'SELECT current_user'",
        f"{conf}/pgpass",
        f"host=127.0.0.1 user=postgres_exporter dbname=postgres sslmode=verify-full"
        f" sslrootcert={conf}/ca.crt channel_binding=require",
    )
    assert cmd.rc == 0 and cmd.stdout.strip() == "postgres_exporter", cmd.stderr


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


# GET argv[1] over HTTPS verified with the CA argv[2], logged in as argv[3] with password argv[4].
FETCH = (
    "import base64, ssl, sys, urllib.request as u; "
    "r = u.Request(sys.argv[1]); "
    "r.add_header('Authorization', 'Basic ' + base64.b64encode("
    "(sys.argv[3] + ':' + sys.argv[4]).encode()).decode()); "
    "print(u.urlopen(r, context=ssl.create_default_context(cafile=sys.argv[2])).read().decode())"
)


def test_exporter_shows_replication(host, leader, members, cluster, secrets):
    cmd = host.run(
        "python3 -c %s %s %s %s %s", FETCH, f"https://{members[me(host)]}:9187/metrics",
        "/etc/prometheus-postgres-exporter/ca.crt", "prometheus",
        secrets["vault_monitoring_scrape_password"],
    )
    assert cmd.rc == 0, cmd.stderr
    samples = parse(line for line in cmd.stdout.splitlines() if line and not line.startswith("#"))
    assert value(samples, "pg_up") == 1
    if me(host) == leader:
        standbys = sorted(set(members) - {leader})
        assert value(samples, "pgrepl_node_is_primary") == 1
        assert value(samples, "pgrepl_node_lag_seconds") == 0
        assert value(samples, "pgrepl_quorum_required") == len(members) // 2
        assert value(samples, "pgrepl_quorum_streaming_standbys") == len(standbys)
        for standby in standbys:
            lag = value(samples, "pgrepl_standby_replay_lag_bytes",
                        application_name=standby, sync_state="quorum")
            assert lag >= 0
            assert value(samples, "pgrepl_slot_active", slot_name=standby.replace("-", "_")) == 1
    else:
        assert value(samples, "pgrepl_node_is_primary") == 0
        assert value(samples, "pgrepl_node_standby_streaming") == 1
        assert value(samples, "pgrepl_node_lag_seconds") >= 0
        assert value(samples, "pgrepl_node_timeline") == cluster[leader]["TL"]
        assert not [n for n, _, _ in samples if n.startswith(("pgrepl_quorum_", "pgrepl_standby_"))]
