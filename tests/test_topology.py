"""The topology (playbooks/vars/topology.yml: which group serves which port to which groups, the
firewall's one source) agrees with what the roles listen on and who they let in: the roles'
default ports, pg_hba's client groups, Prometheus' scrape targets, nginx's upstreams. A role that
opens a new port or a new client without the topology fails here, not on a host.

Its map of the app instances (kv_topology_app_instances) is derived from the app role's variables
of each host, and the playbooks pass it to nginx and Prometheus as their own inputs: neither role
reads the app role's variables."""

from pathlib import Path

import pytest
import yaml
from ansible.plugins.filter.mathstuff import FilterModule as AnsibleMathFilters
from jinja2.nativetypes import NativeEnvironment
from kv_hosts import FilterModule

ROOT = Path(__file__).resolve().parent.parent
ROLES = ROOT / "roles"
NATIVE = NativeEnvironment()
NATIVE.filters.update(FilterModule().filters())  # the project's filters, as ansible.cfg loads them
NATIVE.filters["zip"] = AnsibleMathFilters().filters()["zip"]  # Ansible's, as the playbooks use it


def _yaml(path: Path):
    return yaml.safe_load(path.read_text()) or {}


def _defaults(role: str) -> dict:
    return _yaml(ROLES / role / "defaults" / "main.yml")


def _render(value, context: dict):
    if isinstance(value, str) and "{{" in value:
        return NATIVE.from_string(value).render(**context)
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _render(v, context) for k, v in value.items()}
    return value


TOPOLOGY = _yaml(ROOT / "playbooks" / "vars" / "topology.yml")


def _services() -> list[dict]:
    services = TOPOLOGY["kv_topology_services"]
    return [{**s, "ports": [int(p) for p in _render(s["ports"], {})],
             "from_groups": s.get("from_groups", [])} for s in services]


SERVICES = _services()


def _allows(group: str, port: int, client: str) -> bool:
    return any(port in s["ports"] and s["group"] == group
               and (client in s["from_groups"] or "all" in s["from_groups"])
               for s in SERVICES)


def _served(group: str, port: int) -> list[dict]:
    return [s for s in SERVICES if s["group"] == group and port in s["ports"]]


def test_playbook_passes_the_topology_to_the_firewall():
    play = _yaml(ROOT / "playbooks" / "common.yml")[0]
    assert "vars/topology.yml" in play["vars_files"]
    role = next(r for r in play["roles"] if r["role"] == "common")
    assert role["common_firewall_services"] == "{{ kv_topology_services }}"


def test_every_service_is_well_formed():
    names = [s["name"] for s in SERVICES]
    assert len(names) == len(set(names)), names
    for s in SERVICES:
        assert s["ports"] and all(1 <= p <= 65535 for p in s["ports"]), s
        assert s["from_groups"] or s.get("from_cidrs") or s.get("public"), f"{s['name']}: no source"


def test_every_listening_port_of_the_roles_is_in_the_topology():
    """Each role's default *_port is served by some group of the topology (ports a role only
    connects to are listed as such)."""
    client_only = {"django_kv_db_port", "postgres_replication_etcd_port",
                   "common_firewall_ssh_port"}
    socket_only = {"pgbackrest_restore_port"}  # a restored cluster listens on no TCP address
    # published by nginx on nginx_exporter_port; read by the exporter on the same host
    loopback_only = {"nginx_exporter_local_port", "nginx_status_port"}
    ports = set().union(*(s["ports"] for s in SERVICES))
    missing = {}
    for role in sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").is_file()):
        for key, value in _defaults(role).items():
            if (key.endswith("_port") and key not in client_only | socket_only | loopback_only
                    and isinstance(value, int)
                    and value not in ports):
                missing[key] = value
    assert missing == {}, f"ports the roles open that playbooks/vars/topology.yml lacks: {missing}"


def test_postgresql_clients_are_pg_hba_clients():
    d = _defaults("postgres_replication")
    hba = (ROLES / "postgres_replication" / "templates" / "patroni.yml.j2").read_text()
    # Replication and rewind from the members (the hosts of postgres_replication_group).
    assert "__postgres_replication_members" in hba
    assert _allows(d["postgres_replication_group"], d["postgres_replication_port"],
                   d["postgres_replication_group"])
    for var in ("postgres_replication_app_group", "postgres_replication_monitoring_group"):
        assert f"groups[{var}]" in hba, f"pg_hba no longer built from {var}"
        assert _allows(d["postgres_replication_group"], d["postgres_replication_port"], d[var]), (
            f"{d[var]} ({var}) is a pg_hba client but cannot reach port "
            f"{d['postgres_replication_port']}")
    # The members' Patroni API and etcd (Patroni's DCS) between the members.
    assert _allows(d["postgres_replication_group"], d["postgres_replication_patroni_port"],
                   d["postgres_replication_group"])
    assert _allows(d["postgres_replication_dcs_group"], d["postgres_replication_etcd_port"],
                   d["postgres_replication_group"])
    assert _defaults("django_kv")["django_kv_db_port"] == d["postgres_replication_port"]


def test_scrape_targets_are_reachable_from_monitoring():
    d = _defaults("prometheus_grafana")
    jobs = _render(_yaml(ROLES / "prometheus_grafana" / "vars" / "main.yml")
                   ["prometheus_grafana_jobs"], d)
    monitoring = d["prometheus_grafana_monitoring_group"]
    assert {j["name"] for j in jobs} >= {"node", "kv", "postgres", "nginx", "etcd"}
    for job in jobs:
        for port in [int(p) for p in job["ports"]]:
            assert _allows(job["group"], port, monitoring), (
                f"Prometheus scrapes {job['group']}:{port} (job {job['name']}) but the "
                f"topology does not let {monitoring} reach it")


def test_nginx_upstreams_are_the_app_instances():
    n = _defaults("nginx")
    kv = next(s for s in SERVICES if s["name"] == "kv_instances")
    assert kv["group"] == n["nginx_upstream_group"]
    assert kv["ports"] == n["nginx_upstream_default_ports"] == _defaults("django_kv")[
        "django_kv_instances"] == _defaults("prometheus_grafana")[
        "prometheus_grafana_app_instances_default"]
    assert n["nginx_lb_group"] in kv["from_groups"]
    for port in (n["nginx_http_port"], n["nginx_https_port"]):
        assert any(s.get("public") for s in _served(n["nginx_lb_group"], port)), port
    assert _allows(n["nginx_lb_group"], n["nginx_exporter_port"], "monitoring")
    # nginx publishes the exporter on nginx_exporter_port; the exporter's own port is loopback only
    assert n["nginx_exporter_local_port"] != n["nginx_exporter_port"]
    assert _served(n["nginx_lb_group"], n["nginx_exporter_local_port"]) == []


def test_etcd_and_logging():
    e = _defaults("etcd")
    assert _allows(e["etcd_group"], e["etcd_peer_port"], e["etcd_group"])
    assert _allows(e["etcd_group"], e["etcd_client_port"], e["etcd_group"])
    elk = _defaults("elk")
    group = elk["elk_logging_group"]
    beats = _served(group, elk["elk_logstash_beats_port"])
    assert beats and all("all" in s["from_groups"] for s in beats), "every host ships logs"
    for entry in elk["elk_filebeat_inputs"]:
        assert _allows(group, elk["elk_logstash_beats_port"], entry["group"])


@pytest.mark.parametrize("port", [8432])
def test_pgbackrest_both_ways(port):
    assert _allows("postgres", port, "backup")
    assert _allows("backup", port, "postgres")


def _app_instances(groups: dict, hostvars: dict) -> dict:
    return NATIVE.from_string(TOPOLOGY["kv_topology_app_instances"]).render(
        groups=groups, hostvars=hostvars)


def test_app_instances_come_from_each_app_hosts_own_variables():
    hostvars = {
        "app1": {"internal_address": "10.0.0.21", "django_kv_instances": [9000, "9001"],
                 "django_kv_bind_address": "10.1.0.21"},
        "app2": {"internal_address": "10.0.0.22"},
        "app3": {"ansible_facts": {"default_ipv4": {"address": "10.0.0.23"}},
                 "django_kv_instances": [8000]},
        "lb1": {"internal_address": "10.0.0.10", "django_kv_instances": [1]},
    }
    groups = {"app": ["app1", "app2", "app3"], "lb": ["lb1"]}
    default_ports = _defaults("django_kv")["django_kv_instances"]
    assert _app_instances(groups, hostvars) == {
        "app1": {"address": "10.1.0.21", "ports": [9000, 9001]},  # the instances' bind address
        "app2": {"address": "10.0.0.22", "ports": default_ports},  # the app role's defaults
        "app3": {"address": "10.0.0.23", "ports": [8000]},  # the address from its facts
    }
    assert _app_instances({"lb": ["lb1"]}, hostvars) == {}  # no app group: no instances


def _play(path: str, hosts: str) -> dict:
    return next(p for p in _yaml(ROOT / path) if p.get("hosts") == hosts)


def _role(play: dict, name: str) -> dict:
    return next(r for r in play["roles"] if r["role"] == name)


def _includes(node, role: str) -> list[dict]:
    """Every include_role of `role` under `node`, with its vars."""
    found = []
    if isinstance(node, dict):
        spec = node.get("ansible.builtin.include_role")
        if isinstance(spec, dict) and spec.get("name") == role:
            found.append(node)
        for value in node.values():
            found += _includes(value, role)
    elif isinstance(node, list):
        for value in node:
            found += _includes(value, role)
    return found


APP_INSTANCES = "{{ kv_topology_app_instances }}"


def test_the_balancer_gets_the_app_instances_as_its_own_input():
    lb = _play("playbooks/lb.yml", "lb")
    assert "vars/topology.yml" in lb["vars_files"]
    nginx = _role(lb, "nginx")
    assert nginx["nginx_upstream_servers"] == APP_INSTANCES
    assert nginx["nginx_client_max_body_size"] == "{{ kv_topology_max_request_bytes }}"
    # a drain renders the same upstream file as a converge, plus `down`
    for path in ("playbooks/rolling_update.yml", "playbooks/rollback.yml"):
        play = _play(path, "app")
        assert "vars/topology.yml" in play["vars_files"], path
        drains = _includes(play, "nginx")
        assert len(drains) == 2, path
        for task in drains:
            assert task["vars"]["nginx_upstream_servers"] == APP_INSTANCES, path
    bench = _play("bench/benchmark.yml", "lb[0]")
    assert "../playbooks/vars/topology.yml" in bench["vars_files"]
    assert bench["vars"]["nginx_upstream_servers"] == APP_INSTANCES
    assert bench["vars"]["nginx_client_max_body_size"] == "{{ kv_topology_max_request_bytes }}"
    assert _includes(bench, "nginx")


def test_prometheus_gets_the_app_instances_as_its_own_input():
    play = _play("playbooks/monitoring.yml", "monitoring")
    assert "vars/topology.yml" in play["vars_files"]
    job_ports = _role(play, "prometheus_grafana")["prometheus_grafana_job_ports"]
    # tests/monitoring/render.yml renders the templates with the same value
    rendered_with = _play("tests/monitoring/render.yml", "monitoring")["vars"]
    assert rendered_with["prometheus_grafana_job_ports"] == job_ports
    instances = {"app1": {"address": "10.0.0.21", "ports": [8000, 8005]},
                 "app2": {"address": "10.0.0.22", "ports": [8000]}}
    assert NATIVE.from_string(job_ports["kv"]).render(kv_topology_app_instances=instances) == {
        "app1": [8000, 8005], "app2": [8000]}


def test_max_request_bytes_is_the_apps_largest_value_plus_room():
    expr = NATIVE.from_string(TOPOLOGY["kv_topology_max_request_bytes"])
    value = _defaults("django_kv")["django_kv_max_value_bytes"]
    assert expr.render() == value + 4096 == _defaults("nginx")["nginx_client_max_body_size"]
    assert expr.render(django_kv_max_value_bytes="2048") == 2048 + 4096


@pytest.mark.parametrize("role", ["nginx", "prometheus_grafana"])
def test_the_roles_that_reach_the_app_read_none_of_its_variables(role):
    used = [f"{p.relative_to(ROOT)}:{n}"
            for p in sorted((ROLES / role).rglob("*")) if p.is_file() and p.suffix != ".md"
            for n, line in enumerate(p.read_text().splitlines(), 1) if "django_kv" in line]
    assert used == [], f"role {role} reads the app role's variables: {used}"
