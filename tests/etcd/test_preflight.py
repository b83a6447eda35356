"""Role etcd's preflight: an etcd cluster needs an odd number of members (a majority survives one
loss only then); an even count or an empty group is refused before anything is installed, with a
message that names the group, the variable and where to fix them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def run_preflight(tmp_path, members, group="dcs", extra=(), without_address=()):
    hosts = {"localhost": {"internal_address": "10.0.0.31"}} if members else {}
    for i in range(2, members + 1):
        hosts[f"m{i}"] = {"internal_address": f"10.0.0.{30 + i}"}
    for name in without_address:  # no internal_address, and the play gathers no facts
        hosts[name] = {}
    inventory = {"all": {"hosts": {"localhost": {}}, "children": {group: {"hosts": hosts}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    playbook = shutil.which("ansible-playbook") or str(ROOT / ".venv" / "bin" / "ansible-playbook")
    return subprocess.run(
        [playbook, str(HERE / "preflight.yml"), "-i", str(tmp_path / "hosts.yml"), *extra],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"},
    )  # fmt: skip


@pytest.mark.parametrize("members", [1, 3, 5])
def test_an_odd_member_count_passes(tmp_path, members):
    run = run_preflight(tmp_path, members)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "failed=0" in run.stdout


@pytest.mark.parametrize("members", [0, 2, 4])
def test_an_even_or_empty_member_count_is_refused(tmp_path, members):
    run = run_preflight(tmp_path, members)
    assert run.returncode != 0
    assert "etcd needs an odd number of members" in run.stdout, run.stdout[-3000:]
    assert f"group 'dcs' (etcd_group) has {members}" in run.stdout, run.stdout[-3000:]
    assert "in the inventory's hosts.yml" in run.stdout


def test_the_group_comes_from_etcd_group(tmp_path):
    run = run_preflight(tmp_path, 2, group="consensus", extra=["-e", "etcd_group=consensus"])
    assert run.returncode != 0
    assert "group 'consensus' (etcd_group) has 2: localhost, m2" in run.stdout, run.stdout[-3000:]
    ok = run_preflight(tmp_path, 3, group="consensus", extra=["-e", "etcd_group=consensus"])
    assert ok.returncode == 0, ok.stdout[-3000:]


def test_a_member_without_an_address_is_refused(tmp_path):
    """Through the internal_address filters on real hostvars: the member without an address is
    named, with what to set; the members that have one are not."""
    run = run_preflight(tmp_path, 1, without_address=["m2", "m3"])
    assert run.returncode != 0
    assert "etcd members m2, m3 have no address: set internal_address" in run.stdout, (
        run.stdout[-3000:])
