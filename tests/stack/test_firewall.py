"""From a container on the lab network that is not in the inventory (172.30.99.250), every
port the topology opens on any lab host (playbooks/vars/topology.yml, plus SSH) is tried: only
lb1's 80 and 443 answer; everything else is refused or dropped. The scan is
scripts/portscan.py, the command README "Security" documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OUTSIDER = "172.30.99.250"
IMAGE = "kvlab/debian:bookworm"
NETWORK = "kvlab"


def _lab_addresses() -> dict[str, str]:
    inv = yaml.safe_load((ROOT / "inventory" / "lab" / "hosts.yml").read_text())
    out: dict[str, str] = {}

    def walk(group: dict) -> None:
        for name, hv in (group.get("hosts") or {}).items():
            if hv and "internal_address" in hv:
                out[name] = hv["internal_address"]
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(inv["all"])
    return out


def _topology_ports() -> set[int]:
    services = yaml.safe_load((ROOT / "playbooks" / "vars" / "topology.yml").read_text())
    # SSH, and the listeners that are on loopback only (nginx's stub_status, the nginx exporter).
    ports = {22, 8080, 19113}
    for s in services["kv_topology_services"]:
        p = s["ports"]
        ports.update([8000, 8001, 8002] if isinstance(p, str) else p)
    return ports


@pytest.mark.lab
def test_only_the_balancer_answers_from_outside_the_inventory(lab):
    addresses = _lab_addresses()
    assert OUTSIDER not in addresses.values()
    ports = sorted(_topology_ports())
    cmd = ["docker", "run", "--rm", "-i", "--network", NETWORK, "--ip", OUTSIDER, IMAGE,
           "timeout", "60", "python3", "-", "--hosts", ",".join(addresses.values()),
           "--ports", ",".join(map(str, ports)), "--timeout", "2"]
    run = subprocess.run(cmd, input=(ROOT / "scripts" / "portscan.py").read_text(),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(results) == len(addresses) * len(ports), run.stdout
    by_address = {a: n for n, a in addresses.items()}
    open_ports = sorted((by_address[r["host"]], r["port"]) for r in results
                        if r["state"] == "open")
    assert open_ports == [("lb1", 80), ("lb1", 443)], open_ports


@pytest.mark.lab
def test_the_nginx_exporter_and_stub_status_listen_on_loopback_only(lab):
    """The exporter's own port and nginx's stub_status answer nobody but the balancer itself:
    from the controller (an admin address, which the firewall lets through to every port) they
    are refused, not filtered: nothing listens on the internal address; nginx's TLS listener on
    9113 is open."""
    defaults = yaml.safe_load((ROOT / "roles" / "nginx" / "defaults" / "main.yml").read_text())
    local, published = defaults["nginx_exporter_local_port"], defaults["nginx_exporter_port"]
    status = defaults["nginx_status_port"]
    lb1 = _lab_addresses()["lb1"]
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "portscan.py"), "--hosts", lb1,
         "--ports", f"{published},{local},{status}", "--timeout", "2"],
        capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 0, run.stderr
    states = {r["port"]: r["state"] for r in map(json.loads, run.stdout.splitlines())}
    assert states == {published: "open", local: "refused", status: "refused"}, states
    for port in (local, status):
        inside = subprocess.run(
            ["docker", "exec", "kvlab-lb1", "ss", "-Htln", f"sport = :{port}"],
            capture_output=True, text=True, timeout=30, check=False)
        assert inside.returncode == 0, inside.stderr
        assert [line.split()[3] for line in inside.stdout.splitlines()] == [f"127.0.0.1:{port}"]
