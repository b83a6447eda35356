"""The internal_address filters (plugins/filter/kv_hosts.py): the one rule for where the other
hosts reach a host, and the error that names what to set when a host has no address. The roles'
rendered output with the filter is checked by the template tests and the lab's check mode."""

import pytest
from ansible.errors import AnsibleFilterError
from jinja2 import Environment, StrictUndefined
from kv_hosts import FilterModule, hosts_without_address, internal_address, valid_ports

FACTS = {"default_ipv4": {"address": "10.0.0.7", "interface": "eth0"}}
HOSTVARS = {
    "set": {"internal_address": "172.30.99.21", "ansible_facts": FACTS},
    "facts": {"ansible_facts": FACTS},
    "v6": {"internal_address": "fd00::5"},
    "own": {"pgbackrest_address": "192.0.2.9", "internal_address": "172.30.99.31",
            "ansible_facts": FACTS},
    "bare": {"ansible_facts": {}},
    "no_route": {"ansible_facts": {"default_ipv4": {}}},
    "never": {},
}


@pytest.mark.parametrize(("host", "address"), [
    ("set", "172.30.99.21"),  # internal_address wins over the facts
    ("facts", "10.0.0.7"),  # else the default IPv4 route's address
    ("v6", "fd00::5"),  # the inventory's value as it is, without facts
    ("own", "172.30.99.31"),  # another variable only when asked for
])
def test_internal_address(host, address):
    assert internal_address(host, HOSTVARS) == address


@pytest.mark.parametrize(("host", "address"), [
    ("own", "192.0.2.9"),  # the preferred variable first
    ("set", "172.30.99.21"),  # then internal_address
    ("facts", "10.0.0.7"),  # then the facts
])
def test_preferred_variable(host, address):
    assert internal_address(host, HOSTVARS, "pgbackrest_address") == address


@pytest.mark.parametrize("host", ["bare", "no_route", "never"])
def test_no_address_names_the_host_and_what_to_set(host):
    with pytest.raises(AnsibleFilterError) as err:
        internal_address(host, HOSTVARS)
    message = str(err.value)
    assert message.startswith(f"{host} has neither internal_address nor")
    assert f"set internal_address for {host} in the inventory" in message
    assert "gather facts" in message and "playbooks/facts.yml" in message


def test_no_address_names_the_preferred_variable():
    with pytest.raises(AnsibleFilterError, match="neither pgbackrest_address nor internal_address"):
        internal_address("bare", HOSTVARS, "pgbackrest_address")


def test_unknown_host():
    with pytest.raises(AnsibleFilterError, match="'ghost' is not a host of the inventory"):
        internal_address("ghost", HOSTVARS)


def test_hosts_without_address():
    assert hosts_without_address(list(HOSTVARS), HOSTVARS) == ["bare", "no_route", "never"]
    assert hosts_without_address(["set", "facts", "v6"], HOSTVARS) == []
    assert hosts_without_address([], HOSTVARS) == []


def test_in_a_template():
    """As the roles call them: a host name piped in, hostvars as the argument."""
    env = Environment(undefined=StrictUndefined)
    env.filters.update(FilterModule().filters())
    template = env.from_string(
        "{{ hosts | map('internal_address', hostvars) | join(',') }};"
        "{{ 'own' | internal_address(hostvars, 'pgbackrest_address') }};"
        "{{ hosts | hosts_without_address(hostvars) | join(',') }}")
    rendered = template.render(hosts=["set", "facts", "v6"], hostvars=HOSTVARS)
    assert rendered == "172.30.99.21,10.0.0.7,fd00::5;192.0.2.9;"


@pytest.mark.parametrize("ports", [[8000], [8000, 8001, 8002], ["8000", 8001], (1, 65535)])
def test_valid_ports(ports):
    assert valid_ports(ports)


@pytest.mark.parametrize("ports", [
    [], None, 8000, "8000", {"a": 8000}, [8000, 8000], [8000, "8000"], [0], [65536], [-1],
    ["80a"], [8000.5], [True], [None],
])
def test_invalid_ports(ports):
    assert not valid_ports(ports)


def test_valid_ports_with_a_floor():
    assert valid_ports([1024, 8000], 1024)
    assert not valid_ports([80, 8000], 1024)
    env = Environment()
    env.filters.update(FilterModule().filters())
    assert env.from_string("{{ [80] | valid_ports }} {{ [80] | valid_ports(1024) }}").render() \
        == "True False"
