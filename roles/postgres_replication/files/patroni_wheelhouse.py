#!/usr/bin/env python3
"""Build (or find) the wheelhouse of Patroni for one target Python and platform.

Runs on the Ansible controller, which reaches PyPI; the PostgreSQL hosts need not. Binary wheels
are downloaded for the target (``--platform``/``--python-version``); requirements published
only as source (pure Python) are built into wheels here. The directory's name is a hash of the
requirements and the target, so an unchanged pin set is never downloaded again; it appears
complete or not at all (built aside, then renamed).

Prints one JSON object: {"changed", "wheelhouse"}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def pins(requirements: Path) -> list[str]:
    lines = (ln.split("#", 1)[0].strip() for ln in requirements.read_text().splitlines())
    return [ln for ln in lines if ln]


def platform_tags(arch: str, glibc: str) -> list[str]:
    major, minor = (int(x) for x in glibc.split(".")[:2])
    if major != 2 or minor < 17:
        raise SystemExit(f"glibc {glibc}: only manylinux (glibc >= 2.17) targets are supported")
    return [f"manylinux2014_{arch}"] + [f"manylinux_2_{m}_{arch}" for m in range(5, minor + 1)]


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")


def build(requirements: Path, python: str, arch: str, glibc: str, out: Path) -> dict:
    wanted = pins(requirements)
    key = hashlib.sha256("\n".join([*wanted, python, arch, glibc]).encode()).hexdigest()[:16]
    dest = out / f"cp{python.replace('.', '')}-{arch}-glibc{glibc}-{key}"
    if dest.is_dir():
        return {"changed": False, "wheelhouse": str(dest)}
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        # Source-only pins first (built here: pure Python, any platform), then every pin as a
        # binary for the target; pip skips what is already there.
        src = tmp / "src"
        pip("download", "--no-deps", "--no-binary", ":all:", "-d", str(src),
            *[p for p in wanted if p.split("==")[0].lower() in SOURCE_ONLY])
        for sdist in sorted(src.iterdir()):
            pip("wheel", "--no-deps", "-w", str(tmp), str(sdist))
        shutil.rmtree(src)
        tags = [a for t in platform_tags(arch, glibc) for a in ("--platform", t)]
        pip("download", "--no-deps", "--only-binary", ":all:", "-d", str(tmp),
            "--python-version", python, "--implementation", "cp", *tags,
            *[p for p in wanted if p.split("==")[0].lower() not in SOURCE_ONLY])
        tmp.chmod(0o755)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"changed": True, "wheelhouse": str(dest)}


# Requirements PyPI has only as source distributions.
SOURCE_ONLY = {"python-etcd", "ydiff"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requirements", type=Path, required=True)
    ap.add_argument("--python", required=True, help="target Python, e.g. 3.11")
    ap.add_argument("--arch", required=True, help="target machine, e.g. x86_64")
    ap.add_argument("--glibc", required=True, help="target glibc, e.g. 2.36")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    print(json.dumps(build(a.requirements, a.python, a.arch, a.glibc, a.out)))


if __name__ == "__main__":
    main()
