"""testinfra reads the inventory from `ansible-inventory --list`, which wraps the values an
inventory plugin composed (inventory/lab-ssh/ssh.yml: the SSH connection variables) as
``{"__ansible_unsafe": value}``. Unwrapped here, testinfra reaches each host with its own SSH
backend (as the deploy user, with sudo, host key checked) instead of one `ansible` run per
command."""

import json

import testinfra.utils.ansible_runner as ansible_runner
from testinfra.host import Host

_inventory = ansible_runner.get_ansible_inventory


def _plain_inventory(*args, **kwargs):
    return json.loads(json.dumps(_inventory(*args, **kwargs)),
                      object_hook=lambda d: d.get("__ansible_unsafe", d))  # fmt: skip


ansible_runner.get_ansible_inventory = _plain_inventory


# A check that applies to some hosts only is not collected for the others (deselected), so a
# skip in this suite always means something could not be checked. Markers:
#   only_groups(*groups)  hosts in any of these inventory groups
#   only_first_of(group)  the first host of the group (checks of the group as a whole)
#   only_where(predicate) hosts for which predicate(host, params) is true (params: the test's
#                         parameters, e.g. {"side": "backup"})
def pytest_configure(config):
    for line in (
        "only_groups(*groups): run on the hosts of these inventory groups only",
        "only_first_of(group): run on the first host of the group only",
        "only_where(predicate): run on the hosts for which predicate(host, params) is true",
    ):
        config.addinivalue_line("markers", line)


def _applies(item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    host = params.get("_testinfra_host")
    if not isinstance(host, Host):  # not a host's check (or its collection failed: reported)
        return True
    variables = host.ansible.get_variables()
    for marker in item.iter_markers("only_groups"):
        if not set(marker.args) & set(variables["group_names"]):
            return False
    for marker in item.iter_markers("only_first_of"):
        (group,) = marker.args
        if host.backend.get_hostname() != variables["groups"][group][0]:
            return False
    return all(marker.args[0](host, params) for marker in item.iter_markers("only_where"))


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        (kept if _applies(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
