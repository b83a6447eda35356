"""How tests on the controller reach the lab's Prometheus and Alertmanager: HTTPS verified with the
lab's internal CA, basic auth as the UI user (role prometheus_grafana), whose password is read
from the lab's vault, as the stack tests read the API tokens.

    from tests.lab_monitoring import lab_monitoring
    mon = lab_monitoring()
    mon.get(f"{mon.prometheus}/api/v1/targets").json()

KV_PROMETHEUS_URL overrides Prometheus's URL (the dashboards' live test takes it from make).
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = ROOT / "inventory" / "lab"
VAULT = INVENTORY / "group_vars" / "all" / "vault.yml"
VAULT_PASSWORD = INVENTORY / "vault-password.txt"
ROLE_DEFAULTS = ROOT / "roles" / "prometheus_grafana" / "defaults" / "main.yml"
# The lab keeps its CA per machine (inventory/lab/group_vars/all/pki.yml).
LAB_CA = Path(os.environ.get("HOME", "/root")) / ".local" / "share" / "kvlab" / "pki" / "ca.crt"


def _vault() -> dict:
    venv = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "ansible-vault"
    run = subprocess.run(
        [str(venv if venv.exists() else "ansible-vault"), "view",
         "--vault-password-file", str(VAULT_PASSWORD), str(VAULT)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return yaml.safe_load(run.stdout) or {}


def _mon_address() -> str:
    """internal_address of the lab's first monitoring host."""
    hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
    monitoring = hosts["all"]["children"]["monitoring"]["hosts"]
    return next(iter(monitoring.values()))["internal_address"]


@dataclass(frozen=True)
class Monitoring:
    prometheus: str  # https://<address>:9090
    alertmanager: str  # https://<address>:9093
    user: str
    password: str
    ca: str  # the CA certificate that verifies both

    def get(self, url: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return requests.get(url, auth=(self.user, self.password), verify=self.ca, **kwargs)

    def post(self, url: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return requests.post(url, auth=(self.user, self.password), verify=self.ca, **kwargs)


@functools.cache
def lab_monitoring() -> Monitoring:
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    address = _mon_address()
    return Monitoring(
        prometheus=os.environ.get("KV_PROMETHEUS_URL")
        or f"https://{address}:{defaults['prometheus_grafana_prometheus_port']}",
        alertmanager=f"https://{address}:{defaults['prometheus_grafana_alertmanager_port']}",
        user=defaults["prometheus_grafana_ui_user"],
        password=_vault()["vault_prometheus_ui_password"],
        ca=str(LAB_CA),
    )
