"""testinfra on the PostgreSQL hosts and the pgBackRest repository host after site.yml: the TLS
servers run and answer only clients with a certificate of the internal CA, WAL archiving is on,
`pgbackrest check` is green from the repository host, the repository is encrypted and holds a full
backup, the timers are scheduled and the metrics file is there.

Outside Molecule, against the lab (read-only but for the WAL segment `pgbackrest check` archives):
    .venv/bin/pytest --hosts='ansible://postgres:backup' \
        --ansible-inventory=inventory/lab/hosts.yml molecule/stack/tests/test_backup.py
"""

import json
import re

import pytest

testinfra_hosts = ["postgres", "backup"]

STANZA = "kv"
PORT = 8432
PKI = "/etc/pgbackrest/pki"
TEXTFILE = "/var/lib/prometheus/node-exporter/pgbackrest.prom"
COMPLETION = "pgbackrest_backup_last_completion_timestamp_seconds"


def _vars(host):
    return host.ansible.get_variables()


def _groups(host):
    return set(_vars(host)["group_names"])


def _address(host, name=None):
    if name is None:
        return _vars(host)["internal_address"]
    return host.backend.ansible_runner.get_variables(name)["internal_address"]


def _as_repo_user(host, command):
    return host.run(f"runuser -u pgbackrest -- {command}")


def _info(host):
    out = _as_repo_user(host, f"pgbackrest --stanza={STANZA} --output=json info")
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)[0]


def test_tls_server_runs_with_its_sandbox(host):
    server = host.service("pgbackrest-server")
    assert server.is_running and server.is_enabled
    paths = host.run("systemctl show -p DropInPaths --value pgbackrest-server").stdout.split()
    assert "/etc/systemd/system/pgbackrest-server.service.d/50-hardening.conf" in paths
    address = _address(host)
    assert host.socket(f"tcp://{address}:{PORT}").is_listening


def test_configuration_is_private_and_the_passphrase_only_on_the_repository(host):
    conf = host.file("/etc/pgbackrest/pgbackrest.conf")
    assert conf.user == "root" and conf.mode == 0o640
    text = host.check_output("cat /etc/pgbackrest/pgbackrest.conf")
    if "backup" in _groups(host):
        assert conf.group == "pgbackrest"
        assert re.search(r"^repo1-cipher-type=aes-256-cbc$", text, re.M)
        assert re.search(r"^repo1-cipher-pass=\S{20,}$", text, re.M)
    else:
        assert conf.group == "postgres"
        assert "cipher-pass" not in text
        assert host.file(f"{PKI}/client.key").mode == 0o600


ROGUE = "/tmp/pgbackrest-rogue"


def _rogue_cert(host, owner, common_name):
    """A self-signed client certificate (not of the CA) with an accepted common name."""
    made = host.run(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1"
        f" -subj /CN={common_name} -keyout {ROGUE}.key -out {ROGUE}.crt"
        f" && chown {owner} {ROGUE}.key {ROGUE}.crt && chmod 600 {ROGUE}.key"
    )
    assert made.rc == 0, made.stderr


def _client_options(host, side, cert, key):
    """pgBackRest options that make this host's client present cert/key to the other side."""
    if side == "postgres":
        return f"--repo1-host-cert-file={cert} --repo1-host-key-file={key}"
    count = len(_vars(host)["groups"]["postgres"])
    return " ".join(
        f"--pg{i}-host-cert-file={cert} --pg{i}-host-key-file={key}" for i in range(1, count + 1)
    )


@pytest.mark.parametrize("side", ["postgres", "backup"])
@pytest.mark.only_where(lambda host, params: params["side"] in _groups(host))
def test_tls_servers_answer_only_a_client_certificate_they_accept(host, side):
    """A PostgreSQL host reaches the repository host's server (pgbackrest info) and the repository
    host reaches every PostgreSQL host's server (pgbackrest check) with its client certificate;
    with a certificate of the CA whose common name tls-server-auth does not list (the host's
    server certificate) the server denies access; with a self-signed one of an accepted name
    the handshake fails."""
    user = "postgres" if side == "postgres" else "pgbackrest"
    command = f"pgbackrest --stanza={STANZA} --log-level-console=error " + (
        "--output=json info" if side == "postgres" else "check"
    )

    def run(cert, key):
        return host.run(f"runuser -u {user} -- {command} {_client_options(host, side, cert, key)}")

    good = run(f"{PKI}/client.crt", f"{PKI}/client.key")
    assert good.rc == 0, good.stdout + good.stderr
    if side == "postgres":
        assert json.loads(good.stdout)[0]["status"]["code"] == 0, good.stdout
    denied = run(f"{PKI}/server.crt", f"{PKI}/server.key")
    assert "access denied" in denied.stdout + denied.stderr, denied.stdout + denied.stderr
    _rogue_cert(host, user, f"pgbackrest-{_vars(host)['inventory_hostname']}")
    try:
        rogue = run(f"{ROGUE}.crt", f"{ROGUE}.key")
        out = rogue.stdout + rogue.stderr
        assert "unknown ca" in out, out
    finally:
        host.run(f"rm -f {ROGUE}.key {ROGUE}.crt")


@pytest.mark.only_groups("postgres")
def test_archiving_is_on_through_patroni(host):
    for setting, wanted in (
        ("archive_mode", "on"),
        ("archive_command", f"pgbackrest --stanza={STANZA} archive-push %p"),
        ("archive_timeout", "1min"),
    ):
        out = host.check_output(f"runuser -u postgres -- psql -XAtc 'SHOW {setting}'")
        assert out == wanted, setting


@pytest.mark.only_groups("backup")
def test_stanza_check_is_green_from_the_repository_host(host):
    out = _as_repo_user(host, f"pgbackrest --stanza={STANZA} --log-level-console=warn check")
    assert out.rc == 0, out.stdout + out.stderr


@pytest.mark.only_groups("backup")
def test_repository_is_encrypted_and_holds_a_full_backup(host):
    info = _info(host)
    assert info["status"]["code"] == 0, info["status"]
    assert info["cipher"] == "aes-256-cbc"
    assert [b for b in info["backup"] if b["type"] == "full"]
    assert info["archive"] and info["archive"][0]["max"]
    # Encrypted on disk: pgBackRest's aes-256-cbc files start with OpenSSL's salt header.
    head = host.check_output(f"head -c 8 /var/lib/pgbackrest/backup/{STANZA}/backup.info")
    assert head == "Salted__", head


@pytest.mark.only_groups("backup")
def test_backup_and_metrics_timers_are_scheduled(host):
    for timer in (
        "pgbackrest-backup-full.timer",
        "pgbackrest-backup-diff.timer",
        "pgbackrest-metrics.timer",
    ):
        assert host.service(timer).is_enabled, timer
        assert host.run(f"systemctl is-active {timer}").stdout.strip() == "active", timer
        nxt = host.check_output(f"systemctl show -p NextElapseUSecRealtime --value {timer}")
        assert nxt not in ("", "n/a", "0"), (timer, nxt)
    unit = host.check_output("systemctl show -p Unit --value pgbackrest-backup-full.timer")
    assert unit == "pgbackrest-backup@full.service"


@pytest.mark.only_groups("backup")
def test_metrics_file_is_present_and_up(host):
    prom = host.file(TEXTFILE)
    assert prom.exists and prom.mode == 0o644
    text = prom.content_string
    assert re.search(r"^pgbackrest_metrics_up 1$", text, re.M), text
    assert re.search(r'^pgbackrest_stanza_status\{stanza="kv"\} 0$', text, re.M), text
    for kind in ("full", "diff", "incr"):
        assert re.search(
            rf"^{COMPLETION}\{{stanza=\"kv\",type=\"{kind}\"\}} \d",
            text,
            re.M,
        ), kind
