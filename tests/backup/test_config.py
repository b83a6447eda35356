"""pgBackRest's configuration as the role renders it for the lab's inventory: the repository host
reaches every PostgreSQL host over TLS with its client certificate and accepts only theirs; the
PostgreSQL hosts archive asynchronously to the repository host and accept only its certificate;
the cipher passphrase is only on the repository host."""

import configparser
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "tests" / "backup" / "render.yml"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pgbackrest")
    out = tmp / "rendered.json"
    extra = tmp / "vars.json"
    extra.write_text(
        json.dumps(
            {
                "pgbackrest_pg_path": "/var/lib/postgresql/15/main",
                "pgbackrest_cipher_pass": "render-test-passphrase-0123456789",
                "pgbackrest_render_out": str(out),
            }
        )
    )
    run = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "ansible-playbook"),
            str(PLAYBOOK),
            "-i",
            str(ROOT / "inventory" / "lab"),
            "--vault-password-file",
            str(ROOT / "inventory" / "lab" / "vault-password.txt"),
            "--tags",
            "pgbackrest_render",
            "-e",
            f"@{extra}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return json.loads(out.read_text())


def parse(text):
    """pgBackRest's ini: repeated keys (tls-server-auth) are kept as lists."""
    sections = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_every_file_parses_as_ini(rendered):
    assert set(rendered) == {"pg1", "pg2", "pg3", "backup1"}
    for text in rendered.values():
        configparser.ConfigParser(strict=False).read_string(text)


def test_repository_host_reaches_every_postgres_host_over_tls(rendered):
    conf = parse(rendered["backup1"])
    stanza = conf["kv"]
    hosts = {stanza[f"pg{i}-host"][0] for i in (1, 2, 3)}
    assert hosts == {"172.30.99.31", "172.30.99.32", "172.30.99.33"}
    for i in (1, 2, 3):
        assert stanza[f"pg{i}-host-type"] == ["tls"]
        assert stanza[f"pg{i}-host-cert-file"] == ["/etc/pgbackrest/pki/client.crt"]
    assert "pg4-host" not in stanza
    glob = conf["global"]
    assert glob["backup-standby"] == ["y"]
    assert glob["repo1-path"] == ["/var/lib/pgbackrest"]
    assert glob["repo1-cipher-type"] == ["aes-256-cbc"]
    assert glob["repo1-cipher-pass"] == ["render-test-passphrase-0123456789"]
    assert glob["repo1-retention-full"] == ["2"]
    assert glob["repo1-retention-diff"] == ["7"]
    assert sorted(glob["tls-server-auth"]) == [
        "pgbackrest-pg1=kv",
        "pgbackrest-pg2=kv",
        "pgbackrest-pg3=kv",
    ]
    assert glob["tls-server-address"] == ["172.30.99.61"]


@pytest.mark.parametrize("host", ["pg1", "pg2", "pg3"])
def test_postgres_hosts_archive_to_the_repository_host(rendered, host):
    conf = parse(rendered[host])
    glob = conf["global"]
    assert glob["repo1-host"] == ["172.30.99.61"]
    assert glob["repo1-host-type"] == ["tls"]
    assert glob["archive-async"] == ["y"]
    assert glob["spool-path"] == ["/var/spool/pgbackrest"]
    assert glob["tls-server-auth"] == ["pgbackrest-backup1=kv"]
    assert not any(k.startswith("repo1-cipher") or k == "repo1-path" for k in glob)
    assert conf["kv"]["pg1-path"] == ["/var/lib/postgresql/15/main"]
    assert "pg1-host" not in conf["kv"]
