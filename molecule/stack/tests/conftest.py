"""testinfra reads the inventory from `ansible-inventory --list`, which wraps the values an
inventory plugin composed (inventory/lab-ssh/ssh.yml: the SSH connection variables) as
``{"__ansible_unsafe": value}``. Unwrapped here, testinfra reaches each host with its own SSH
backend (as the deploy user, with sudo, host key checked) instead of one `ansible` run per
command."""

import json

import testinfra.utils.ansible_runner as ansible_runner

_inventory = ansible_runner.get_ansible_inventory


def _plain_inventory(*args, **kwargs):
    return json.loads(json.dumps(_inventory(*args, **kwargs)),
                      object_hook=lambda d: d.get("__ansible_unsafe", d))  # fmt: skip


ansible_runner.get_ansible_inventory = _plain_inventory
