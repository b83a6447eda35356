"""The nginx role's upstream files, rendered by Ansible with the role's preflight first.

nginx_upstream_servers: the servers come from the role's own input, which playbooks/lb.yml fills
from the topology (each app host's own ports and address); the role alone uses every host's
internal address with nginx_upstream_default_ports; the preflight refuses a malformed value.
nginx_upstream_down_ports (used by bench/benchmark.yml's phases): the template marks exactly the
listed instances `down`, and the preflight refuses a value that names an unknown host, is not a
list, or would leave no instance in the upstream."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
INVENTORY = """
all:
  hosts:
    localhost: {internal_address: 10.0.0.10, nginx_exporter_scrape_password: scrape-pw-0123}
  children:
    app:
      hosts:
        app1: {internal_address: 10.0.0.21}
        app2: {internal_address: 10.0.0.22, django_kv_instances: [9000, 9001]}
"""


def render(tmp_path, down_ports=None, **extra):
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    out = tmp_path / "out"
    out.mkdir()
    playbook = shutil.which("ansible-playbook") or str(ROOT / ".venv" / "bin" / "ansible-playbook")
    extra_vars = {"nginx_upstream_down_ports": down_ports or {}, **extra}
    run = subprocess.run(
        [playbook, str(HERE / "render_upstream.yml"), "-i", str(tmp_path / "hosts.yml"),
         "-e", f"out_dir={out}", "-e", json.dumps(extra_vars)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"},
    )  # fmt: skip
    servers = {}
    for f in sorted(out.glob("*.conf")):
        for line in f.read_text().splitlines():
            if line.startswith("server "):
                servers[line.split()[1]] = line.rstrip(";").endswith(" down")
    return run, servers


def test_no_ports_down_by_default(tmp_path):
    run, servers = render(tmp_path, {})
    assert run.returncode == 0, run.stdout[-3000:]
    assert servers == {
        "10.0.0.21:8000": False, "10.0.0.21:8001": False, "10.0.0.21:8002": False,
        "10.0.0.22:9000": False, "10.0.0.22:9001": False,
    }  # fmt: skip


def test_the_role_alone_uses_its_default_ports_and_internal_addresses(tmp_path):
    """Without the topology the role reads no other role's variables: app2's own instance list
    (an app role's variable in the inventory) does not reach the upstream."""
    run, servers = render(tmp_path, render_topology=False)
    assert run.returncode == 0, run.stdout[-3000:]
    assert servers == {
        "10.0.0.21:8000": False, "10.0.0.21:8001": False, "10.0.0.21:8002": False,
        "10.0.0.22:8000": False, "10.0.0.22:8001": False, "10.0.0.22:8002": False,
    }  # fmt: skip


def test_upstream_servers_are_the_roles_input(tmp_path):
    given = {"app1": {"address": "10.9.0.1", "ports": [7000]},
             "app2": {"address": "fd00::22", "ports": ["7001", 7002]}}
    run, servers = render(tmp_path, {"app2": [7002]}, nginx_upstream_servers=given)
    assert run.returncode == 0, run.stdout[-3000:]
    assert servers == {"10.9.0.1:7000": False, "[fd00::22]:7001": False, "[fd00::22]:7002": True}


APP2 = {"address": "10.0.0.22", "ports": [8000]}  # a well-formed entry beside a malformed one


@pytest.mark.parametrize(
    "upstream_servers",
    [
        ["app1", "app2"],
        {"app1": {"address": "10.0.0.21", "ports": [8000]}},
        {"app1": {"address": "10.0.0.21", "ports": [8000]}, "app2": APP2,
         "app3": {"address": "10.0.0.23", "ports": [8000]}},
        {"app1": {"address": "", "ports": [8000]}, "app2": APP2},
        {"app1": {"ports": [8000]}, "app2": APP2},
        {"app1": {"address": "10.0.0.21", "ports": 8000}, "app2": APP2},
        {"app1": {"address": "10.0.0.21", "ports": []}, "app2": APP2},
        {"app1": {"address": "10.0.0.21", "ports": [8000, 70000]}, "app2": APP2},
        {"app1": {"address": "10.0.0.21", "ports": [8000, "http"]}, "app2": APP2},
        {"app1": {"address": "10.0.0.21", "ports": [8000, 8000]}, "app2": APP2},
        {"app1": [8000], "app2": APP2},
    ],
    ids=["not-a-map", "host-missing", "unknown-host", "empty-address", "no-address",
         "ports-not-a-list", "no-ports", "port-out-of-range", "port-not-a-number",
         "duplicate-port", "entry-not-a-map"],
)  # fmt: skip
def test_preflight_refuses_malformed_upstream_servers(tmp_path, upstream_servers):
    run, servers = render(tmp_path, nginx_upstream_servers=upstream_servers)
    assert run.returncode != 0
    assert "nginx_upstream_servers maps every host of the group \"app\"" in run.stdout
    assert "playbooks/vars/topology.yml" in run.stdout  # where the project sets it
    assert servers == {}


def test_listed_instances_are_down_and_only_those(tmp_path):
    run, servers = render(tmp_path, {"app1": [8001, 8002], "app2": ["9001"]})
    assert run.returncode == 0, run.stdout[-3000:]
    assert servers == {
        "10.0.0.21:8000": False, "10.0.0.21:8001": True, "10.0.0.21:8002": True,
        "10.0.0.22:9000": False, "10.0.0.22:9001": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    "down_ports",
    [
        {"app3": [8000]},
        {"app1": 8000},
        {"app1": "8000"},
        {"app1": [8000, 8001, 8002], "app2": [9000, 9001]},
    ],
    ids=["unknown-host", "not-a-list", "a-string", "nothing-left"],
)
def test_preflight_refuses_a_bad_value(tmp_path, down_ports):
    run, servers = render(tmp_path, down_ports)
    assert run.returncode != 0
    assert "nginx_upstream_down_ports maps app hosts" in run.stdout
    assert servers == {}


@pytest.mark.parametrize(
    "password", ["", "short-pw-11", "CHANGEME"], ids=["empty", "short", "placeholder"]
)
def test_preflight_refuses_a_bad_exporter_scrape_password(tmp_path, password):
    run, servers = render(tmp_path, {}, nginx_exporter_scrape_password=password)
    assert run.returncode != 0
    assert "nginx_exporter_scrape_password is empty, shorter than 12" in run.stdout
    assert password == "" or password not in run.stdout
    assert servers == {}


def test_preflight_refuses_the_exporter_on_nginx_s_own_port(tmp_path):
    run, servers = render(tmp_path, {}, nginx_exporter_local_port=9113)
    assert run.returncode != 0
    assert "nginx_exporter_local_port" in run.stdout
    assert servers == {}


@pytest.mark.parametrize("tries", [0, 4, 10])
def test_tries_that_outlast_a_whole_host_pass(tmp_path, tries):
    run, servers = render(tmp_path, {}, nginx_proxy_next_upstream_tries=tries)
    assert run.returncode == 0, run.stdout[-3000:]
    assert len(servers) == 5


@pytest.mark.parametrize("tries", [1, 3])
def test_tries_a_single_host_can_exhaust_are_refused(tmp_path, tries):
    """app1 runs 3 instances: with 3 tries, a request can spend them all on app1 just after it
    went down and get 504 though app2 answers."""
    run, servers = render(tmp_path, {}, nginx_proxy_next_upstream_tries=tries)
    assert run.returncode != 0
    assert f"nginx_proxy_next_upstream_tries is {tries}, but an app host" in run.stdout
    assert "runs 3 instances" in run.stdout
    assert servers == {}


def test_the_default_tries_outlast_a_whole_host():
    defaults = yaml.safe_load((ROOT / "roles" / "nginx" / "defaults" / "main.yml").read_text())
    tries = defaults["nginx_proxy_next_upstream_tries"]
    assert tries == 0 or tries > len(defaults["nginx_upstream_default_ports"]), tries
