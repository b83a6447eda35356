"""testinfra on every host: the firewall of role common (README "Security") is loaded with an
input policy of drop, survives a restart of nftables.service, and the restart leaves Docker's
embedded DNS (NAT rules of other tables in the container's namespace) working."""

import json
import re
import shlex

testinfra_hosts = ["all"]

TABLE = "kv_filter"


def _input_chain(host) -> dict:
    out = host.check_output(f"nft -j list chain inet {TABLE} input")
    for item in json.loads(out)["nftables"]:
        if "chain" in item:
            return item["chain"]
    raise AssertionError(f"no input chain in table inet {TABLE}: {out}")


# A DNS query for one name straight to Docker's embedded server (127.0.0.11, reached through
# the NAT rules Docker keeps in the container's namespace), bypassing /etc/hosts.
DNS_QUERY = """
import socket, struct, sys
name = sys.argv[1]
q = struct.pack(">HHHHHH", 0x4b56, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, ("127.0.0.11", 53))
a = s.recv(512)
rcode, answers = a[3] & 15, struct.unpack(">H", a[6:8])[0]
print(rcode, answers)
sys.exit(0 if rcode == 0 and answers > 0 else 1)
"""


def _docker_dns_resolves(host) -> None:
    # The container's name: `kvlab_container` in the lab's SSH mode (inventory/lab-ssh/ssh.yml,
    # where `ansible_host` is the address), `ansible_host` over docker exec, and Molecule's host
    # name in a scenario of its own (no `ansible_host`).
    names = host.ansible.get_variables()
    name = (names.get("kvlab_container") or names.get("ansible_host")
            or names["inventory_hostname"])
    run = host.run(f"timeout 10 python3 -c {shlex.quote(DNS_QUERY)} {shlex.quote(name)}")
    assert run.rc == 0, f"Docker's DNS did not resolve {name}: {run.stdout} {run.stderr}"


def test_table_loaded_with_input_policy_drop(host):
    chain = _input_chain(host)
    assert chain["hook"] == "input" and chain["policy"] == "drop", chain
    assert host.service("nftables").is_enabled
    assert host.file("/etc/nftables.conf").contains("/etc/nftables.d/")
    conf = host.file("/etc/nftables.conf").content_string
    assert not re.search(r"^\s*flush\b", conf, re.M), conf


def test_ruleset_survives_a_restart_and_dns_still_resolves(host):
    with host.sudo():
        before = host.check_output(f"nft list table inet {TABLE}")
        host.check_output("systemctl restart nftables")
        assert host.service("nftables").is_running
        after = host.check_output(f"nft list table inet {TABLE}")
    assert _input_chain(host)["policy"] == "drop"
    strip = [line for line in before.splitlines() if "counter packets" not in line]
    assert strip == [line for line in after.splitlines() if "counter packets" not in line]
    # The lab's hosts are containers whose name server is Docker's: it still answers.
    assert "127.0.0.11" in host.file("/etc/resolv.conf").content_string
    _docker_dns_resolves(host)
