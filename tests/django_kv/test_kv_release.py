"""roles/django_kv/files/kv_release.py: release ids and bundles are reproducible and change only
when the app, its requirements or the target change (no network: the wheelhouse is pre-made)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import kv_release  # roles/django_kv/files, on pytest's pythonpath (pyproject.toml)
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(kv_release.__file__)

TARGET = ["--python", "3.11", "--arch", "x86_64", "--glibc", "2.36"]


@pytest.fixture
def tree(tmp_path):
    app = tmp_path / "app"
    (app / "kvsite").mkdir(parents=True)
    (app / "manage.py").write_text("print('manage')\n")
    (app / "kvsite" / "__init__.py").write_text("")
    (app / "requirements.txt").write_text("Django==5.2.19\n")
    for junk in (".venv/bin/python", "tests/test_x.py", "kvsite/__pycache__/x.pyc"):
        (app / junk).parent.mkdir(parents=True, exist_ok=True)
        (app / junk).write_text("junk")
    out = tmp_path / "out"
    req_hash = hashlib.sha256(b"Django==5.2.19\n").hexdigest()[:16]
    wheels = out / "wheelhouse" / f"cp311-x86_64-glibc2.36-{req_hash}"
    wheels.mkdir(parents=True)
    (wheels / "django-5.2.19-py3-none-any.whl").write_bytes(b"not really a wheel")
    return app, out


def build(app, out, *target):
    argv = [sys.executable, str(SCRIPT), "--app-src", str(app), "--out", str(out)]
    proc = subprocess.run(
        [*argv, *(target or TARGET)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(proc.stdout)


def test_same_tree_same_release_and_nothing_rebuilt(tree):
    app, out = tree
    first = build(app, out)
    assert first["changed"] is True
    digest = hashlib.sha256(Path(first["bundle"]).read_bytes()).hexdigest()
    second = build(app, out)
    assert second == {**first, "changed": False}
    Path(first["bundle"]).unlink()
    third = build(app, out)
    assert third["release_id"] == first["release_id"]
    again = hashlib.sha256(Path(third["bundle"]).read_bytes()).hexdigest()
    assert again == digest, "the bundle is not byte-for-byte reproducible"


def test_bundle_holds_the_app_and_the_wheels_only(tree):
    app, out = tree
    with tarfile.open(build(app, out)["bundle"]) as tar:
        names = sorted(tar.getnames())
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert names == [
        "app/kvsite/__init__.py",
        "app/manage.py",
        "app/requirements.txt",
        "wheels/django-5.2.19-py3-none-any.whl",
    ]


def test_release_changes_with_the_code_and_the_target(tree):
    app, out = tree
    base = build(app, out)["release_id"]
    (app / "tests" / "test_x.py").write_text("changed tests do not make a release")
    assert build(app, out)["release_id"] == base
    (app / "kvsite" / "__init__.py").write_text("# changed\n")
    assert build(app, out)["release_id"] != base


def test_platform_tags_cover_every_glibc_up_to_the_hosts():
    tags = kv_release.platforms("x86_64", "2.36")
    assert tags[0] == "manylinux2014_x86_64"
    assert "manylinux_2_17_x86_64" in tags and tags[-1] == "manylinux_2_36_x86_64"
    with pytest.raises(SystemExit):
        kv_release.platforms("x86_64", "2.12")
