#!/usr/bin/env python3
"""Build (or find) a release bundle of the KV app for one target Python and platform.

Runs on the Ansible controller, which reaches PyPI; the hosts need not. A bundle is a gzipped
tar holding ``app/`` (the service's source, tests and caches left out) and ``wheels/`` (every
pinned requirement as a binary wheel for the target). Its name is a content hash of the app's
files, the requirements and the target, so an unchanged tree yields the same release id and
nothing is rebuilt, copied or restarted.

Prints one JSON object: {"changed", "release_id", "bundle", "wheelhouse"}.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

EXCLUDE_DIRS = {
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    "tests",
    "build",
    "dist",
    ".git",
}
EXCLUDE_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".sqlite3", ".log")


def app_files(src: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDE_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith(EXCLUDE_SUFFIXES):
                continue
            out.append(Path(root, name))
    return sorted(out, key=lambda p: p.relative_to(src).as_posix())


def tree_hash(src: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(src).as_posix().encode() + b"\0")
        h.update(oct(f.stat().st_mode & 0o111).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def platforms(arch: str, glibc: str) -> list[str]:
    major, minor = (int(x) for x in glibc.split(".")[:2])
    if major != 2 or minor < 17:
        raise SystemExit(f"glibc {glibc}: only manylinux (glibc >= 2.17) targets are supported")
    tags = [f"manylinux2014_{arch}"]
    tags += [f"manylinux_2_{m}_{arch}" for m in range(17, minor + 1)]
    return tags


def download_wheels(requirements: Path, python: str, arch: str, glibc: str, dest: Path) -> None:
    """pip download into a temporary directory, then rename: a wheelhouse is complete or absent."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=dest.parent))
    tmp.chmod(0o755)
    abi = "cp" + python.replace(".", "")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    for tag in platforms(arch, glibc):
        cmd += ["--platform", tag]
    cmd += ["-r", str(requirements), "-d", str(tmp)]
    try:
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def add_file(tar: tarfile.TarFile, arcname: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def write_bundle(src: Path, files: list[Path], wheelhouse: Path, dest: Path) -> None:
    """A byte-for-byte reproducible tar.gz (sorted entries, zero mtimes, root owner)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmpname = tempfile.mkstemp(prefix=".partial-", dir=dest.parent)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for f in files:
                mode = 0o755 if f.stat().st_mode & 0o111 else 0o644
                add_file(tar, "app/" + f.relative_to(src).as_posix(), f.read_bytes(), mode)
            for w in sorted(wheelhouse.iterdir()):
                add_file(tar, "wheels/" + w.name, w.read_bytes(), 0o644)
        os.chmod(tmpname, 0o644)
        os.rename(tmpname, dest)
    finally:
        if os.path.exists(tmpname):
            os.unlink(tmpname)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--app-src", required=True, type=Path)
    p.add_argument("--python", required=True, help="target major.minor, e.g. 3.11")
    p.add_argument("--arch", required=True, help="e.g. x86_64, aarch64")
    p.add_argument("--glibc", required=True, help="target glibc, e.g. 2.36")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args()

    src = a.app_src.resolve()
    requirements = src / "requirements.txt"
    if not requirements.is_file():
        raise SystemExit(f"{requirements} is missing")
    target = f"cp{a.python.replace('.', '')}-{a.arch}-glibc{a.glibc}"
    req_hash = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    wheelhouse = a.out / "wheelhouse" / f"{target}-{req_hash}"
    files = app_files(src)
    release_id = hashlib.sha256(
        f"{tree_hash(src, files)}\n{target}\n{req_hash}\n".encode()
    ).hexdigest()[:16]
    bundle = a.out / "bundles" / f"kv-{release_id}.tar.gz"

    changed = False
    if not wheelhouse.is_dir():
        download_wheels(requirements, a.python, a.arch, a.glibc, wheelhouse)
        changed = True
    if not bundle.is_file():
        write_bundle(src, files, wheelhouse, bundle)
        changed = True
    print(
        json.dumps(
            {
                "changed": changed,
                "release_id": release_id,
                "bundle": str(bundle),
                "wheelhouse": str(wheelhouse),
                "target": target,
            }
        )
    )


if __name__ == "__main__":
    main()
