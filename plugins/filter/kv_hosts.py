"""A host's internal address: where the other hosts of the stack reach it (docs/conventions.md,
"Addresses between hosts"). Roles, playbooks and templates ask these filters instead of spelling
out the fallback themselves:

    {{ h | internal_address(hostvars) }}                        internal_address, else the
                                                                default IPv4 address of its facts
    {{ h | internal_address(hostvars, 'pgbackrest_address') }}  that variable of h first
    {{ groups['app'] | hosts_without_address(hostvars) }}       the hosts that have neither
                                                                (for the preflights)
    {{ ports | valid_ports }}, {{ ports | valid_ports(1024) }}  a non-empty list of distinct
                                                                TCP ports (from 1, or the floor
                                                                given) for the preflights
"""

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

_MISSING = object()


def _host_vars(host: str, hostvars: Mapping) -> Mapping:
    if not isinstance(host, str) or host not in hostvars:
        raise AnsibleFilterError(f"internal_address: {host!r} is not a host of the inventory")
    return hostvars[host]


def _lookup(host: str, hostvars: Mapping, prefer: str | None) -> Any:
    """The address of `host`, or _MISSING: `prefer` and internal_address as the inventory sets
    them, else the address of the default IPv4 route from the host's gathered facts."""
    hv = _host_vars(host, hostvars)
    for name in (prefer, "internal_address"):
        if name and name in hv:
            return hv[name]
    facts = hv.get("ansible_facts", {})
    ipv4 = facts.get("default_ipv4") if isinstance(facts, Mapping) else None
    if isinstance(ipv4, Mapping) and "address" in ipv4:
        return ipv4["address"]
    return _MISSING


def internal_address(host: str, hostvars: Mapping, prefer: str | None = None) -> Any:
    """The address the other hosts reach `host` at; a clear error when it has none."""
    address = _lookup(host, hostvars, prefer)
    if address is _MISSING:
        names = f"{prefer} nor internal_address" if prefer else "internal_address"
        raise AnsibleFilterError(
            f"{host} has neither {names} nor a default IPv4 address in its facts: set "
            f"internal_address for {host} in the inventory (its host_vars in hosts.yml), or "
            f"gather facts on every host first (playbooks/facts.yml, site.yml's first play)")
    return address


def hosts_without_address(hosts: Iterable[str], hostvars: Mapping) -> list[str]:
    """The hosts of `hosts` that internal_address would refuse (for a preflight's message)."""
    return [h for h in hosts if _lookup(h, hostvars, None) is _MISSING]


def valid_ports(value: Any, low: int = 1) -> bool:
    """True for a non-empty list of distinct ports low..65535, each an int or a string of
    digits (as an inventory or --extra-vars gives them); False for anything else."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return False
    ports = []
    for item in value:
        if isinstance(item, bool):
            return False
        if isinstance(item, str) and item.isdigit():
            item = int(item)
        if not isinstance(item, int) or not low <= item <= 65535:
            return False
        ports.append(item)
    return len(ports) > 0 and len(set(ports)) == len(ports)


class FilterModule:
    """internal_address, hosts_without_address, valid_ports."""

    def filters(self) -> dict:
        return {"internal_address": internal_address,
                "hosts_without_address": hosts_without_address,
                "valid_ports": valid_ports}
