"""The operator's playbooks around Patroni, on the lab: a setting that needs a restart changed by
the role (every member restarted, the leader last, the leader kept), maintenance mode (pause,
resume), the manual failover of a paused cluster whose leader is gone, and their refusals.

While paused, Patroni neither restarts a crashed PostgreSQL nor fails over: the test kills the
leader's PostgreSQL, checks that nothing happens by itself for several of Patroni's loops, promotes
a standby with `playbooks/failover.yml`, resumes, and waits until the former leader follows the
new one. Every step is bounded; the cluster is resumed and healthy again in a ``finally``.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from . import harness

pytestmark = [pytest.mark.lab]

# Patroni's loop_wait on the lab (roles/postgres_replication defaults): nothing may happen by
# itself during this many loops of a paused cluster.
LOOP_WAIT = 2.0
QUIET_LOOPS = 4


def members(host: str) -> dict:
    p = harness.dexec(host, "patronictl", "list", "-f", "json", timeout=30)
    return {m["Member"]: m for m in json.loads(p.stdout)}


def cluster_json(lab: harness.Lab, host: str) -> dict:
    p = harness.dexec(host, "python3", "-c", (
        "import json, ssl, sys, urllib.request\n"
        "ctx = ssl.create_default_context(cafile='/etc/patroni/pki/ca.crt')\n"
        "print(urllib.request.urlopen(sys.argv[1], context=ctx, timeout=5).read().decode())\n"),
        f"https://{lab.addresses[host]}:8008/cluster", timeout=30)
    return json.loads(p.stdout)


def leader(host: str) -> str | None:
    found = [n for n, m in members(host).items() if m["Role"] == "Leader"]
    return found[0] if found else None


def maintenance(action: str):
    return harness.playbook("maintenance.yml", timeout=300, extra=["-e", f"maintenance={action}"])


def refused(name: str, *extra: str) -> str:
    """Run a playbook that must fail; its whole output (the refusal's message included)."""
    binary = harness.PY_BIN / "ansible-playbook"
    p = harness.run(["env", "ANSIBLE_FORCE_COLOR=0",
                     f"ANSIBLE_CONFIG={harness.ROOT / 'ansible.cfg'}",
                     str(binary if binary.exists() else "ansible-playbook"),
                     "-i", str(harness.INVENTORY),
                     "--vault-password-file", str(harness.VAULT_PASSWORD),
                     str(harness.ROOT / "playbooks" / name), *extra], timeout=300, check=False)
    assert p.returncode != 0, f"{name} {extra} did not fail:\n{p.stdout[-2000:]}"
    return " ".join(p.stdout.split())


def changed(p) -> int:
    return sum(int(part.split("=")[1]) for line in p.stdout.splitlines() if "changed=" in line
               for part in line.split() if part.startswith("changed="))


def settings(host: str) -> dict:
    """max_connections, how many settings wait for a restart, and when the postmaster started."""
    p = harness.dexec(host, "runuser", "-u", "postgres", "--", "psql", "-XAtq", "-F", "|", "-c",
                      "SELECT current_setting('max_connections'), (SELECT count(*) FROM pg_settings"
                      " WHERE pending_restart), extract(epoch FROM pg_postmaster_start_time())",
                      timeout=30)
    value, pending, started = p.stdout.strip().split("|")
    return {"max_connections": int(value), "pending": int(pending), "started": float(started)}


SETTINGS = ["--tags", "postgres_replication_preflight,postgres_replication_settings"]


def test_a_setting_that_needs_a_restart_reaches_every_member_leader_last(lab):
    """max_connections lowered, then raised back, through playbooks/postgres.yml with the role's
    settings tag (its preflight, the dynamic configuration, the restarts: the tasks a whole
    converge runs for a changed setting): the role edits the dynamic configuration and restarts
    the members one at a time, the leader last (again if Patroni marks the standbys once the
    leader runs with the new value). Every member ends with the value and nothing pending, and the
    leader stays the leader."""
    default = 200  # roles/postgres_replication/defaults/main.yml
    lowered = default - 50
    lab.wait_healthy(why="before the restart test")
    old = lab.primary()
    before = {h: settings(h) for h in [old, *lab.standbys()]}
    assert {s["max_connections"] for s in before.values()} == {default}, before
    try:
        lower = ["-e", f"postgres_replication_max_connections={lowered}"]
        p = harness.playbook("postgres.yml", timeout=600, extra=[*SETTINGS, *lower])
        after = {h: settings(h) for h in before}
        assert {h: (s["max_connections"], s["pending"]) for h, s in after.items()} == \
            {h: (lowered, 0) for h in before}, after
        assert all(after[h]["started"] > before[h]["started"] for h in before), after
        # the role's restarts, in order (loop items labelled "member (role)"): the first pass
        # restarts every standby before the leader
        order = re.findall(r"^changed: \[\S+\] => \(item=(\S+) \(", p.stdout, re.M)
        assert old in order, p.stdout[-3000:]
        assert set(order[:order.index(old)]) == set(before) - {old}, order
        assert lab.wait_healthy(why="after the lowered setting")["primary"] == old
    finally:
        harness.playbook("postgres.yml", timeout=600, extra=SETTINGS)
    restored = {h: settings(h) for h in before}
    assert {h: (s["max_connections"], s["pending"]) for h, s in restored.items()} == \
        {h: (default, 0) for h in before}, restored
    assert lab.wait_healthy(why="after the restored setting")["primary"] == old


def test_maintenance_refuses_an_unknown_action(lab):
    out = refused("maintenance.yml", "-e", "maintenance=stop")
    assert "Say what to do with -e maintenance=pause" in out, out[-2000:]


def test_failover_playbook_refuses_a_running_cluster(lab):
    lab.wait_healthy(why="before the refused failover")
    standby = lab.standbys()[0]
    out = refused("failover.yml", "-e", f"failover_to={standby}")
    assert "not paused: Patroni fails over by itself" in out, out[-2000:]
    assert cluster_json(lab, standby).get("pause") is not True


def test_paused_cluster_waits_for_the_operator_then_resumes(lab):
    lab.wait_healthy(why="before the maintenance test")
    old = lab.primary()
    target = lab.standbys()[0]
    try:
        assert changed(maintenance("pause")) > 0
        assert changed(maintenance("pause")) == 0, "pausing a paused cluster changed something"
        assert cluster_json(lab, target).get("pause") is True
        # the leader's PostgreSQL dies; paused, Patroni neither restarts it nor fails over
        harness.dexec(old, "pkill", "--signal", "KILL", "-x", "postgres", timeout=30)
        time.sleep(LOOP_WAIT * QUIET_LOOPS)
        seen = members(target)
        assert seen[old]["State"] != "running", seen
        assert not [n for n, m in seen.items() if n != old and m["Role"] == "Leader"], seen
        # the operator promotes a standby by hand
        harness.playbook("failover.yml", timeout=300, extra=["-e", f"failover_to={target}"])
        assert leader(target) == target
    finally:
        maintenance("resume")
    assert cluster_json(lab, target).get("pause") is not True
    # resumed: the former leader is rewound and follows the new one by itself
    c = lab.wait_healthy(timeout=180, why="after the manual failover and resume")
    assert c["primary"] == target
    assert c["nodes"][old]["role"] == "standby" and c["nodes"][old]["eligible"], c["nodes"][old]
