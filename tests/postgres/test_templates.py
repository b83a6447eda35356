"""The postgres_replication templates, rendered with tests/postgres/inventory by Ansible itself:
every TCP line of pg_hba is `hostssl` with SCRAM (no `host` line), TLS 1.3 at least, and every
client the role configures verifies the server's certificate against the project CA."""

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CA = "/etc/patroni/pki/ca.crt"
EXPORTER_CA = "/etc/prometheus-postgres-exporter/ca.crt"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("render") / "rendered.json"
    playbook = shutil.which("ansible-playbook") or str(ROOT / ".venv" / "bin" / "ansible-playbook")
    run = subprocess.run(
        [
            playbook, str(HERE / "render.yml"), "-i", str(HERE / "inventory"),
            "--tags", "postgres_replication_render",
            "-e", f"postgres_replication_render_out={out}",
        ],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def patroni(rendered):
    return yaml.safe_load(rendered["patroni.yml"])


def test_pg_hba_has_no_plain_tcp_line(patroni):
    hba = patroni["postgresql"]["pg_hba"]
    kinds = {line.split()[0] for line in hba}
    assert kinds == {"local", "hostssl"}, hba
    assert not [line for line in hba if line.startswith("host ")], hba


def test_every_tcp_line_is_scram(patroni):
    tcp = [line for line in patroni["postgresql"]["pg_hba"] if line.startswith("hostssl")]
    assert tcp, "no TCP line at all"
    assert all(line.split()[-1] == "scram-sha-256" for line in tcp), tcp
    # the app hosts reach the app database, the members replicate: from the inventory
    assert "hostssl kv kv 10.0.0.21/32 scram-sha-256" in tcp
    assert "hostssl replication replicator 10.0.0.33/32 scram-sha-256" in tcp
    # a member that is also an app host (pg3) lets the app in; one that is not (pg2) does not
    kv_clients = sorted(line.split()[3] for line in tcp if line.split()[1:3] == ["kv", "kv"])
    assert kv_clients == ["10.0.0.21/32", "10.0.0.22/32", "10.0.0.33/32"], tcp


# tests/postgres/inventory's passwords, as Python reads them
PASSWORDS = {
    "replication": "re'pl \"$HOME `id` :\\ 2",
    "rewind": "re'w \"$x `z`: 4",
    "exporter": "ex'p \"$x `y`:\\ 3",
    "rest": "pa't \"$r `o`:\\ 5",
}


def test_passwords_reach_patroni_intact(patroni):
    auth = patroni["postgresql"]["authentication"]
    assert auth["replication"]["password"] == PASSWORDS["replication"]
    assert auth["rewind"]["password"] == PASSWORDS["rewind"]
    assert patroni["restapi"]["authentication"]["password"] == PASSWORDS["rest"]


def test_exporter_password_file_escapes_colon_and_backslash(rendered):
    (line,) = [x for x in rendered["exporter-pgpass"].splitlines() if x and not x.startswith("#")]
    # libpq's password file: fields split at an unescaped colon, backslash escapes the next char
    fields, field, chars = [], "", iter(line)
    for c in chars:
        if c == "\\":
            field += next(chars)
        elif c == ":":
            fields.append(field)
            field = ""
        else:
            field += c
    fields.append(field)
    assert fields == ["127.0.0.1", "5432", "postgres", "postgres_exporter", PASSWORDS["exporter"]]


def test_server_speaks_tls13_only(patroni):
    parameters = patroni["postgresql"]["parameters"]
    assert parameters["ssl"] == "on"
    assert parameters["ssl_min_protocol_version"] == "TLSv1.3"
    assert parameters["ssl_cert_file"] == "/etc/patroni/pki/server.crt"


@pytest.mark.parametrize("user", ["replication", "rewind"])
def test_patroni_tcp_clients_verify_the_server_and_bind_the_channel(patroni, user):
    auth = patroni["postgresql"]["authentication"][user]
    assert auth["sslmode"] == "verify-full"
    assert auth["sslrootcert"] == CA
    assert auth["channel_binding"] == "require"


def test_superuser_connects_over_the_socket_only(patroni):
    # peer authentication on the local socket: no TLS there (libpq ignores sslmode on a socket),
    # and no pg_hba line lets the superuser in over TCP
    assert patroni["postgresql"]["use_unix_socket"] is True
    auth = patroni["postgresql"]["authentication"]["superuser"]
    assert auth["sslmode"] == "verify-full" and auth["sslrootcert"] == CA
    hba = patroni["postgresql"]["pg_hba"]
    tcp_users = [line.split()[2] for line in hba if line.split()[0] == "hostssl"]
    assert "postgres" not in tcp_users, hba


def test_exporter_verifies_the_server(rendered):
    env = {}
    for line in rendered["prometheus-postgres-exporter.default"].splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = shlex.split(value)[0]
    dsn = dict(item.split("=", 1) for item in env["DATA_SOURCE_NAME"].split())
    assert dsn["sslmode"] == "verify-full"
    assert dsn["sslrootcert"] == EXPORTER_CA
    assert dsn["host"] == "127.0.0.1"
