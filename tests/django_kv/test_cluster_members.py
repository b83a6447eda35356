"""Role django_kv refuses to deploy an app whose node list (KV_DB_NODES: the hosts of
django_kv_db_group) differs from the members the database cluster reports (Patroni, read by
playbooks/app.yml): quorum reads would not ask every node that can acknowledge a quorum write."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def check(tmp_path, members):
    inventory = {"all": {"hosts": {"localhost": {}},
                         "children": {"postgres": {"hosts": {"pg1": {}, "pg2": {}, "pg3": {}}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    playbook = shutil.which("ansible-playbook") or str(ROOT / ".venv" / "bin" / "ansible-playbook")
    return subprocess.run(
        [playbook, str(HERE / "check_members.yml"), "-i", str(tmp_path / "hosts.yml"),
         "-e", json.dumps({"django_kv_db_cluster_members": members})],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"},
    )  # fmt: skip


def test_the_same_members_in_any_order_pass(tmp_path):
    run = check(tmp_path, ["pg3", "pg1", "pg2"])
    assert run.returncode == 0, run.stdout[-3000:]


def test_no_members_read_skips_the_check(tmp_path):
    run = check(tmp_path, [])
    assert run.returncode == 0, run.stdout[-3000:]


def test_a_member_missing_from_the_group_is_refused(tmp_path):
    run = check(tmp_path, ["pg1", "pg2", "pg3", "pg4"])
    assert run.returncode != 0
    assert "KV_DB_NODES would be pg1, pg2, pg3" in run.stdout, run.stdout[-3000:]
    assert "members are pg1, pg2, pg3, pg4" in run.stdout, run.stdout[-3000:]
    assert '"postgres", django_kv_db_group' in run.stdout, run.stdout[-3000:]


def test_a_host_that_is_no_member_is_refused(tmp_path):
    run = check(tmp_path, ["pg1", "pg2"])
    assert run.returncode != 0
    assert "members are pg1, pg2:" in run.stdout, run.stdout[-3000:]
