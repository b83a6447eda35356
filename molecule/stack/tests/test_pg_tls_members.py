"""testinfra on the PostgreSQL hosts after site.yml: the live pg_hba admits TCP clients only over
TLS with SCRAM, the server speaks TLS 1.3 only, streaming replication verifies the primary and
binds the channel. (The exporter connects over TCP, so through a hostssl line; it opens its
sessions per scrape, too briefly to be caught here; its DSN: tests/postgres/test_templates.py.)

Outside Molecule, against the lab (read-only):
    .venv/bin/pytest --hosts='ansible://postgres' --ansible-inventory=inventory/lab/hosts.yml \
        molecule/stack/tests/test_pg_tls_members.py
"""

testinfra_hosts = ["postgres"]


def sql(host, query):
    cmd = host.run("runuser -u postgres -- psql -XAtq -F '|' -d postgres -c %s", query)
    assert cmd.rc == 0, cmd.stderr
    return [line.split("|") for line in cmd.stdout.splitlines() if line]


def test_live_pg_hba_has_only_hostssl_scram_for_tcp(host):
    rules = sql(host, "SELECT type, auth_method, coalesce(error, '') FROM pg_hba_file_rules")
    assert rules
    assert all(error == "" for _, _, error in rules), rules
    assert {kind for kind, _, _ in rules} == {"local", "hostssl"}, rules
    assert {method for kind, method, _ in rules if kind == "hostssl"} == {"scram-sha-256"}, rules


def test_tls13_only(host):
    assert sql(host, "SHOW ssl") == [["on"]]
    assert sql(host, "SHOW ssl_min_protocol_version") == [["TLSv1.3"]]


def test_replication_verifies_the_primary_and_binds_the_channel(host):
    (recovery,) = sql(host, "SELECT pg_is_in_recovery()")
    if recovery == ["t"]:
        # a standby: its WAL receiver's connection string (libpq's effective options)
        (conninfo,) = sql(host, "SELECT conninfo FROM pg_stat_wal_receiver")
        options = dict(item.split("=", 1) for item in conninfo[0].split() if "=" in item)
        assert options["sslmode"] == "verify-full", conninfo
        assert options["sslrootcert"] == "/etc/patroni/pki/ca.crt", conninfo
        assert options["channel_binding"] == "require", conninfo
    else:
        senders = sql(host, "SELECT r.application_name, s.ssl, s.version FROM pg_stat_replication r"
                            " JOIN pg_stat_ssl s USING (pid)")
        assert len(senders) == len(host.ansible.get_variables()["groups"]["postgres"]) - 1
        assert all(ssl == "t" and version == "TLSv1.3" for _, ssl, version in senders), senders

