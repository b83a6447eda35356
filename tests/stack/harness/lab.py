"""Lab access: commands on the controller and in the containers, playbooks, the lab's
addresses, app settings, tokens and health.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from dataclasses import dataclass

import requests
import yaml

from .config import INVENTORY, PY_BIN, RESULTS, ROOT, VAULT, VAULT_PASSWORD


def run(cmd: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """A bounded subprocess (docker exec, ansible-playbook)."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and p.returncode != 0:
        out = f"{p.stdout}\n{p.stderr}"
        lines = out.splitlines()
        # ansible: the failed tasks and their messages, not the timing recap
        picked = [ln for i, ln in enumerate(lines)
                  if any(m in ln for m in ("fatal:", "FAILED!", "ERROR!", "msg:"))
                  or any(m in "".join(lines[max(0, i - 3):i]) for m in ("fatal:", "FAILED!"))]
        detail = "\n".join(picked[:40]) if picked else out.strip()[-2000:]
        log = RESULTS / "commands.log"
        RESULTS.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"\n===== {' '.join(cmd)} exited {p.returncode}\n{out}")
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode} (full output in {log}):\n"
                           f"{detail}")
    return p


def dexec(host: str, *cmd: str, timeout: float = 60, check: bool = True):
    return run(["docker", "exec", f"kvlab-{host}", *cmd], timeout=timeout, check=check)


def playbook(name: str, timeout: float = 900, extra: list[str] | None = None):
    path = ROOT / "playbooks" / name
    if not path.is_file():
        raise FileNotFoundError(f"playbooks/{name} does not exist (yet)")
    binary = PY_BIN / "ansible-playbook"
    cmd = [str(binary if binary.exists() else "ansible-playbook"), "-i", str(INVENTORY),
           "--vault-password-file", str(VAULT_PASSWORD), str(path), *(extra or [])]
    env_cmd = ["env", "ANSIBLE_FORCE_COLOR=0", f"ANSIBLE_CONFIG={ROOT / 'ansible.cfg'}", *cmd]
    return run(env_cmd, timeout=timeout)


# ------------------------------------------------------------------ the lab


@dataclass
class Lab:
    base: str
    writer: str
    reader: str | None
    addresses: dict[str, str]
    app_ports: tuple[int, ...] = (8000, 8001, 8002)
    _ttl: float | None = None

    @classmethod
    def from_repo(cls) -> Lab:
        inv = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
        addresses: dict[str, str] = {}

        def walk(group: dict) -> None:
            for name, hv in (group.get("hosts") or {}).items():
                addresses[name] = (hv or {}).get("internal_address", "")
            for child in (group.get("children") or {}).values():
                walk(child or {})

        walk(inv["all"])
        writer = reader = ""
        with contextlib.suppress(Exception):
            writer, reader = read_tokens()
        base = os.environ.get("KV_LAB_URL", f"https://{addresses.get('lb1', '172.30.99.10')}")
        return cls(base=base.rstrip("/"), writer=writer, reader=reader, addresses=addresses)

    def unreachable_reason(self) -> str | None:
        if not self.writer:
            return f"no API token with the write scope could be read from {VAULT}"
        try:
            r = requests.get(f"{self.base}/healthz", verify=False, timeout=5)
        except requests.RequestException as exc:
            return f"{self.base}/healthz does not answer: {type(exc).__name__}"
        if r.status_code != 200:
            return f"{self.base}/healthz answered {r.status_code}"
        try:
            r = self.session().get(f"{self.base}/api/cluster", timeout=5)
        except requests.RequestException as exc:
            return f"/api/cluster does not answer: {type(exc).__name__}"
        if r.status_code != 200:
            return f"/api/cluster answered {r.status_code}: {r.text[:200]}"
        return None

    def app_env(self, name: str, default: float) -> float:
        """A number from /etc/kv/env as deployed on app1 (the app's default otherwise)."""
        p = dexec("app1", "sh", "-c", f"grep -h '^{name}=' /etc/kv/env || true",
                  timeout=20, check=False)
        raw = p.stdout.strip().partition("=")[2].strip().strip("'\"")
        try:
            return float(raw) if raw else default
        except ValueError:
            return default

    def nginx_limits(self) -> dict[str, int]:
        """The rate limit (requests per second, burst) and the largest body of the balancer, as
        lb1's live nginx.conf has them (rendered by role nginx from the inventory)."""
        conf = dexec("lb1", "cat", "/etc/nginx/nginx.conf", timeout=20).stdout
        found = {
            "rps": re.search(r"limit_req_zone .*zone=kv_per_client:\S+ rate=(\d+)r/s;", conf),
            "burst": re.search(r"limit_req zone=kv_per_client burst=(\d+)", conf),
            "max_body": re.search(r"client_max_body_size (\d+);", conf),
        }
        missing = [name for name, m in found.items() if not m]
        if missing:
            raise RuntimeError(f"lb1's /etc/nginx/nginx.conf does not set {missing}")
        return {name: int(m.group(1)) for name, m in found.items()}

    def write_timeout(self) -> float:
        """KV_WRITE_TIMEOUT as deployed on app1 (the app's default otherwise)."""
        return self.app_env("KV_WRITE_TIMEOUT", 5.0)

    def app_hosts(self) -> list[str]:
        return sorted(h for h in self.addresses if h.startswith("app"))

    def session(self, token: str | None = None) -> requests.Session:
        s = requests.Session()
        # the lab's certificate is self-signed; and a REQUESTS_CA_BUNDLE (or proxy) in the
        # environment would override a session's verify=False: the lab is reached directly
        s.trust_env = False
        s.verify = False
        s.headers["Authorization"] = f"Bearer {token or self.writer}"
        return s

    def cluster(self, timeout: float = 5) -> dict:
        r = self.session().get(f"{self.base}/api/cluster", params={"fresh": "1"},
                               timeout=timeout)
        r.raise_for_status()
        return r.json()

    def primary(self) -> str:
        p = self.cluster().get("primary")
        if not p:
            raise RuntimeError("the cluster has no primary")
        return p

    def standbys(self) -> list[str]:
        c = self.cluster()
        return sorted(n for n in c["nodes"] if n != c["primary"])

    def wait_healthy(self, timeout: float = 120, why: str = "") -> dict:
        """Wait until /readyz says a write and a read quorum are there and every node streams."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                c = self.cluster(timeout=5)
                nodes = c.get("nodes", {})
                want = len(nodes) - 1
                if (c.get("primary") and c.get("write_quorum") and c.get("read_quorum")
                        and c.get("sync_standbys_streaming", 0) >= want
                        and all(n.get("eligible") for n in nodes.values())):
                    return c
                last = {k: c.get(k) for k in ("primary", "sync_standbys_streaming",
                                              "problems")}
                last["not_eligible"] = {n: s.get("reason") for n, s in nodes.items()
                                        if not s.get("eligible")}
            except (requests.RequestException, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(1)
        raise TimeoutError(f"the cluster is not healthy after {timeout:.0f}s {why}: {last}")

    def patroni_ttl(self) -> float:
        """Patroni's ttl from its dynamic configuration (asked on a PostgreSQL host)."""
        if self._ttl is None:
            last = ""
            for host in sorted(self.cluster()["nodes"]):
                p = dexec(host, "patronictl", "show-config", timeout=30, check=False)
                if p.returncode == 0:
                    self._ttl = float((yaml.safe_load(p.stdout) or {}).get("ttl", 30))
                    break
                last = f"{host}: {(p.stdout + p.stderr).strip()[-300:]}"
            else:
                raise RuntimeError(f"patronictl show-config failed on every node: {last}")
        return self._ttl

    def wait_instances(self, host: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        addr = self.addresses[host]
        missing: list[int] = list(self.app_ports)
        while time.monotonic() < deadline:
            missing = []
            for port in self.app_ports:
                try:
                    ok = requests.get(f"http://{addr}:{port}/healthz", timeout=2).ok
                except requests.RequestException:
                    ok = False
                if not ok:
                    missing.append(port)
            if not missing:
                return
            time.sleep(1)
        raise TimeoutError(f"{host}: instances {missing} not answering after {timeout:.0f}s")


def read_tokens() -> tuple[str, str | None]:
    binary = PY_BIN / "ansible-vault"
    p = run([str(binary if binary.exists() else "ansible-vault"), "view",
             "--vault-password-file", str(VAULT_PASSWORD), str(VAULT)], timeout=30)
    data = yaml.safe_load(p.stdout)
    writer = reader = None
    for t in data.get("vault_kv_api_tokens", []):
        scopes = set(t.get("scopes") or [])
        if "write" in scopes and writer is None:
            writer = t["token"]
        elif scopes == {"read"} and reader is None:
            reader = t["token"]
    if not writer:
        raise RuntimeError("no token with the write scope in the lab vault")
    return writer, reader

