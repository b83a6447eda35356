"""The web configurations (--web.config.file) role pki's web_config entry point writes for
Prometheus, Alertmanager and the exporters: its checker (files/check-web-config.py, run on the
hosts before a file goes live) accepts what promtool accepts and refuses a key that is not the
certificate's, a password stored in clear and unknown keys."""

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "roles" / "pki" / "files" / "check-web-config.py"
# bcrypt of "pw" with the salt the entry point derives (21 characters + ".")
HASH = "$2b$10$0123456789abcdef01234.zPgOS.V98btSt7pNQ9kZNqXq39rEIkW"


def _pair(directory, name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def files(tmp_path):
    cert, key = _pair(tmp_path, "a")
    _, other_key = _pair(tmp_path, "b")

    def write(**changes):
        config = {
            "tls_server_config": {"cert_file": cert, "key_file": key, "min_version": "TLS13"},
            "basic_auth_users": {"prometheus": HASH},
        }
        for k, v in changes.items():
            config[k] = v
        path = tmp_path / "web.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    write.cert, write.key, write.other_key = cert, key, other_key
    return write


def checker(path):
    return subprocess.run(
        [sys.executable, str(CHECKER), str(path)], capture_output=True, text=True, timeout=30
    )


def promtool(path):
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: install Debian's `prometheus` package (ships promtool)")
    return subprocess.run(
        [tool, "check", "web-config", str(path)], capture_output=True, text=True, timeout=30
    )


def test_a_good_web_config_passes_the_checker_and_promtool(files):
    path = files()
    assert checker(path).returncode == 0, checker(path).stderr
    run = promtool(path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_key_that_is_not_the_certificates_is_refused(files):
    path = files(
        tls_server_config={"cert_file": files.cert, "key_file": files.other_key},
    )
    run = checker(path)
    assert run.returncode == 1
    assert "is not the key of" in run.stderr
    assert promtool(path).returncode != 0  # promtool agrees


def test_a_password_in_clear_is_refused(files):
    run = checker(files(basic_auth_users={"prometheus": "pw"}))
    assert run.returncode == 1
    assert "without a bcrypt hash: ['prometheus']" in run.stderr


def test_no_users_or_no_tls_is_refused(files):
    assert "at least one user" in checker(files(basic_auth_users={})).stderr
    run = checker(files(tls_server_config={}))
    assert run.returncode == 1
    assert "cert_file and key_file" in run.stderr


def test_unknown_keys_are_refused(files):
    path = files(basic_auth_user={"prometheus": HASH})
    run = checker(path)
    assert run.returncode == 1
    assert "unknown keys ['basic_auth_user']" in run.stderr
    assert promtool(path).returncode != 0
