#!/usr/bin/python3
"""Certificate expiry metrics for the node exporter's textfile collector.

Reads the first certificate of every file matching the given globs (symlinks are followed, the
metric names the file they point to) with `openssl x509` and writes, atomically (a temporary file
in the same directory, then a rename), a text file of Prometheus metrics:

  kv_certificate_not_after_timestamp_seconds{path,subject}  notAfter of the certificate, Unix time
  kv_certificate_read_error{path}                         1 when the file could not be read/parsed
  kv_certificate_files                                    number of certificate files found
  kv_certificate_metrics_last_success_timestamp_seconds   when this run finished

Usage: kv_certificate_metrics.py --output DIR/kv-certificates.prom GLOB [GLOB ...]
"""

import argparse
import calendar
import glob
import os
import subprocess
import sys
import tempfile
import time

OPENSSL_TIMEOUT = 10  # seconds per certificate
MAX_FILES = 1000  # bound on the number of files read per run

HEADER = {
    "kv_certificate_not_after_timestamp_seconds": (
        "Expiry (notAfter) of the first certificate in a file, Unix time."
    ),
    "kv_certificate_read_error": "1 when a monitored certificate file could not be read or parsed.",
    "kv_certificate_files": "Number of monitored certificate files found.",
    "kv_certificate_metrics_last_success_timestamp_seconds": (
        "Unix time of the last complete run of the certificate expiry collector."
    ),
}


class CertificateError(Exception):
    """A file that is not a readable PEM certificate."""


def parse_not_after(value):
    """openssl's notAfter ('Dec  1 19:45:11 2027 GMT') as Unix time (UTC)."""
    value = " ".join(value.split())
    try:
        parsed = time.strptime(value, "%b %d %H:%M:%S %Y GMT")
    except ValueError as e:
        raise CertificateError(f"unexpected notAfter {value!r}") from e
    return calendar.timegm(parsed)


def parse_openssl_output(text):
    """(subject, notAfter as Unix time) from `openssl x509 -noout -subject -enddate`."""
    subject = not_after = None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.strip() == "subject":
            subject = value.strip()
        elif key.strip() == "notAfter":
            not_after = parse_not_after(value)
    if subject is None or not_after is None:
        raise CertificateError(f"no subject or notAfter in {text!r}")
    return subject, not_after


def read_certificate(path, openssl="openssl"):
    """(subject, notAfter) of the first certificate in the PEM file at path."""
    run = subprocess.run(
        [openssl, "x509", "-noout", "-subject", "-enddate", "-nameopt", "RFC2253", "-in", path],
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT,
        check=False,
    )
    if run.returncode != 0:
        raise CertificateError(run.stderr.strip() or f"openssl exited {run.returncode}")
    return parse_openssl_output(run.stdout)


def find_files(patterns):
    """The real paths of the regular files matching the globs, sorted, without duplicates."""
    found = set()
    for pattern in patterns:
        for name in glob.glob(pattern):
            real = os.path.realpath(name)
            if os.path.isfile(real) or not os.path.exists(real):
                found.add(real)  # a dangling link is reported as a read error
    return sorted(found)[:MAX_FILES]


def escape(value):
    """A label value in the text exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(results, now):
    """The metrics text for results: [(path, (subject, not_after) or None)]."""
    lines = []

    def header(name):
        lines.append(f"# HELP {name} {HEADER[name]}")
        lines.append(f"# TYPE {name} gauge")

    header("kv_certificate_not_after_timestamp_seconds")
    for path, cert in results:
        if cert is not None:
            subject, not_after = cert
            lines.append(
                "kv_certificate_not_after_timestamp_seconds"
                f'{{path="{escape(path)}",subject="{escape(subject)}"}} {not_after}'
            )
    header("kv_certificate_read_error")
    for path, cert in results:
        lines.append(f'kv_certificate_read_error{{path="{escape(path)}"}} {int(cert is None)}')
    header("kv_certificate_files")
    lines.append(f"kv_certificate_files {len(results)}")
    header("kv_certificate_metrics_last_success_timestamp_seconds")
    lines.append(f"kv_certificate_metrics_last_success_timestamp_seconds {now:.3f}")
    return "\n".join(lines) + "\n"


def write_atomically(path, text):
    """Replace path with text so that a reader sees the old file or the new one, never a part."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kv-certificates.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def collect(patterns, openssl="openssl"):
    results = []
    for path in find_files(patterns):
        try:
            results.append((path, read_certificate(path, openssl)))
        except (CertificateError, OSError, subprocess.TimeoutExpired) as e:
            print(f"{path}: {e}", file=sys.stderr)
            results.append((path, None))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="the .prom file to write")
    parser.add_argument("--openssl", default="openssl", help="the openssl binary")
    parser.add_argument("patterns", nargs="*", help="globs of certificate files")
    args = parser.parse_args(argv)
    results = collect(args.patterns, args.openssl)
    write_atomically(args.output, render(results, time.time()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
