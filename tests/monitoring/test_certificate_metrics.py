"""The certificate expiry collector of role node_exporter (files/kv_certificate_metrics.py): it
parses openssl's output, reads real certificates (made here with known expiry dates) through the
real openssl, follows pki's registry symlinks, reports unreadable files, escapes labels and
replaces its output file atomically."""

import datetime
import re
import shutil

import kv_certificate_metrics as kcm  # roles/node_exporter/files, on pytest's pythonpath
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
UNESCAPE = re.compile(r"\\(.)")


def openssl():
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("openssl is missing: install Debian's `openssl` package")
    return path


def make_cert(path, common_name, not_after, organization=None):
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attrs)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - datetime.timedelta(days=365))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def samples(text):
    """{(name, frozenset(labels)): value} of a metrics text; fails on a malformed line."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \w+ .+$", line), line
            continue
        m = SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        labels = frozenset(
            (k, UNESCAPE.sub(lambda e: "\n" if e[1] == "n" else e[1], v))
            for k, v in LABEL.findall(m[2] or "")
        )
        out[(m[1], labels)] = float(m[3])
    return out


def test_parse_openssl_output():
    text = "subject=O=KV,CN=pg1\nnotAfter=Dec  1 19:45:11 2027 GMT\n"
    assert kcm.parse_openssl_output(text) == ("O=KV,CN=pg1", 1827690311)


def test_parse_openssl_output_rejects_what_it_does_not_know():
    with pytest.raises(kcm.CertificateError):
        kcm.parse_openssl_output("subject=CN=x\n")
    with pytest.raises(kcm.CertificateError):
        kcm.parse_openssl_output("subject=CN=x\nnotAfter=2027-12-01\n")


def test_escape():
    assert kcm.escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_real_certificates_registry_links_and_errors(tmp_path):
    certs = tmp_path / "etc"
    certs.mkdir()
    expiry_a = datetime.datetime(2031, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    expiry_b = datetime.datetime(2027, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    a = make_cert(certs / "server.crt", "pg1", expiry_a, organization='K"V')
    b = make_cert(certs / "ca.crt", "KV internal CA", expiry_b)
    broken = certs / "broken.crt"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "etc_server.crt").symlink_to(a)
    (registry / "etc_ca.crt").symlink_to(b)
    (registry / "etc_ca_again.crt").symlink_to(b)  # the same file twice: one series
    (registry / "etc_broken.crt").symlink_to(broken)
    (registry / "etc_gone.crt").symlink_to(certs / "gone.crt")  # a dangling link
    out = tmp_path / "textfile" / "kv-certificates.prom"
    out.parent.mkdir()

    assert kcm.main(["--output", str(out), "--openssl", openssl(), str(registry / "*")]) == 0

    got = samples(out.read_text())
    not_after = {
        dict(labels)["path"]: (dict(labels)["subject"], value)
        for (name, labels), value in got.items()
        if name == "kv_certificate_not_after_timestamp_seconds"
    }
    assert not_after == {
        str(a): ('CN=pg1,O=K\\"V', expiry_a.timestamp()),  # RFC 2253: escaped, CN first
        str(b): ("CN=KV internal CA", expiry_b.timestamp()),
    }
    errors = {
        dict(labels)["path"]: value
        for (name, labels), value in got.items()
        if name == "kv_certificate_read_error"
    }
    assert errors == {
        str(a): 0,
        str(b): 0,
        str(broken): 1,
        str(certs / "gone.crt"): 1,
    }
    assert got[("kv_certificate_files", frozenset())] == 4
    assert got[("kv_certificate_metrics_last_success_timestamp_seconds", frozenset())] > 0
    assert [p.name for p in out.parent.iterdir()] == [out.name], "temporary file left behind"
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_no_certificates_still_reports_a_run(tmp_path):
    out = tmp_path / "kv-certificates.prom"
    out.write_text("old\n")
    kcm.main(["--output", str(out), "--openssl", openssl(), str(tmp_path / "none" / "*")])
    got = samples(out.read_text())
    assert got[("kv_certificate_files", frozenset())] == 0
    assert not any(n == "kv_certificate_not_after_timestamp_seconds" for n, _ in got)


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "kv-certificates.prom"
    out.write_text("old\n")

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(kcm.os, "fsync", fail)
    with pytest.raises(OSError):
        kcm.write_atomically(str(out), "new\n")
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
