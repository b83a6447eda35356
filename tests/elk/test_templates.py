"""Every template of the elk role renders with the lab's inventory and passes the checks that run
without Elastic's binaries: YAML parses as YAML, the pipeline parses, values are the ones the
inventory implies, and no secret is ever written into a file."""

from __future__ import annotations

import configparser
import json
import re

import pytest
import yaml

from .conftest import ROLE
from .logstash_config import parse

TEMPLATES = sorted((ROLE / "templates").glob("*.j2"))
YAML_FILES = ["elasticsearch.yml", "kibana.yml", "logstash-pipelines.yml", "filebeat.yml"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_starts_with_ansible_managed(template):
    assert template.read_text().startswith("{{ ansible_managed | comment }}\n")


def test_every_template_is_rendered_by_the_tests():
    rendered = (ROLE.parent.parent / "tests" / "elk" / "render.yml").read_text()
    for template in TEMPLATES:
        assert template.name.removesuffix(".j2") in rendered, f"{template.name} is not rendered"


def test_rendered_files_parse(render):
    for host, files in render.files.items():
        for name, text in files.items():
            assert "Ansible managed" in text.splitlines()[1], (host, name)
            if name in YAML_FILES:
                assert yaml.safe_load(text) is not None, (host, name)
            elif name.endswith(".conf") and name.startswith("logstash-kv"):
                parse(text)
            elif name == "logstash-override.conf":
                ini = configparser.ConfigParser(interpolation=None)
                ini.read_string(text)
                assert ini["Service"]["Environment"].startswith('"LS_JAVA_OPTS=-Xms')


def test_no_secret_is_written_to_a_file(render):
    """Passwords live in the keystores only; a rendered file never contains one."""
    for host, files in render.files.items():
        secrets = [s for s in render.api[host]["facts"]["secrets"] if s]
        for name, text in files.items():
            for secret in secrets:
                assert secret not in text, f"a password is written into {name} on {host}"


def test_logging_hosts_get_elasticsearch_logstash_kibana(render):
    logging_hosts = render.hosts_with("elasticsearch.yml")
    assert logging_hosts, "no host rendered the logging templates"
    for host in logging_hosts:
        assert render.api[host]["facts"]["is_logging_host"]
        expected = {"kibana.yml", "logstash-kv.conf", "logstash-pipelines.yml"}
        assert set(render.files[host]) >= expected


def test_elasticsearch_yml(render):
    logging_hosts = render.hosts_with("elasticsearch.yml")
    addresses = render.api[logging_hosts[0]]["facts"]["logging_addresses"]
    for host in logging_hosts:
        es = yaml.safe_load(render.files[host]["elasticsearch.yml"])
        assert es["node.name"] == host
        assert es["network.host"] in addresses
        assert es["xpack.security.enabled"] is True
        for layer in ("http", "transport"):
            ssl = es[f"xpack.security.{layer}.ssl"]
            assert ssl["enabled"] is True
            # Elasticsearch only reads files inside its config directory.
            for key in ("key", "certificate"):
                assert ssl[key].startswith("certs/")
            assert all(ca.startswith("certs/") for ca in ssl["certificate_authorities"])
        if len(logging_hosts) == 1:
            assert es["discovery.type"] == "single-node"
            assert "cluster.initial_master_nodes" not in es
        else:
            assert "discovery.type" not in es
            assert es["cluster.initial_master_nodes"] == logging_hosts
            assert es["discovery.seed_hosts"] == [f"{a}:9300" for a in addresses]


def test_heap(render):
    for host in render.hosts_with("elasticsearch-heap.options"):
        facts = render.api[host]["facts"]
        text = render.files[host]["elasticsearch-heap.options"]
        xms = int(re.search(r"^-Xms(\d+)m$", text, re.M).group(1))
        xmx = int(re.search(r"^-Xmx(\d+)m$", text, re.M).group(1))
        assert xms == xmx == facts["heap_mb"]
        assert 256 <= xmx <= min(31744, int(facts["memtotal_mb"]))


def test_kibana_yml(render):
    for host in render.hosts_with("kibana.yml"):
        kibana = yaml.safe_load(render.files[host]["kibana.yml"])
        assert kibana["elasticsearch.hosts"] == render.api[host]["facts"]["elasticsearch_urls"]
        assert all(url.startswith("https://") for url in kibana["elasticsearch.hosts"])
        assert kibana["elasticsearch.username"] == "kibana_system"
        assert "elasticsearch.password" not in kibana  # in Kibana's keystore
        assert kibana["server.ssl.enabled"] is True
        assert kibana["server.port"] == 5601


def test_logstash_pipelines_yml(render):
    for host in render.hosts_with("logstash-pipelines.yml"):
        pipelines = yaml.safe_load(render.files[host]["logstash-pipelines.yml"])
        assert pipelines == [{"pipeline.id": "kv", "path.config": "/etc/logstash/conf.d/kv.conf"}]


def test_logstash_pipeline_input_and_output(render):
    for host in render.hosts_with("logstash-kv.conf"):
        cfg = parse(render.files[host]["logstash-kv.conf"])
        (beats,) = cfg.sections["input"]
        assert beats.name == "beats"
        assert beats.get("port") == "5044"
        assert beats.get("ssl_enabled") == "true"
        assert beats.get("ssl_client_authentication") == "required"
        (es,) = cfg.sections["output"]
        assert es.name == "elasticsearch"
        assert es.get("hosts") == render.api[host]["facts"]["elasticsearch_urls"]
        assert es.get("data_stream") == "true"
        assert es.get("password") == "${ES_WRITER_PASSWORD}"  # from Logstash's keystore
        assert es.get("ssl_verification_mode") == "full"


def test_filebeat_yml(render):
    filebeat_hosts = render.hosts_with("filebeat.yml")
    assert filebeat_hosts, "no host rendered filebeat.yml"
    for host in filebeat_hosts:
        facts = render.api[host]["facts"]
        fb = yaml.safe_load(render.files[host]["filebeat.yml"])
        inputs = fb["filebeat.inputs"]
        assert inputs, f"{host} ships nothing"
        for item in inputs:
            assert item["type"] == "filestream"
            assert item["fields"]["log_type"] in {"app", "nginx", "postgresql"}
        assert len({i["id"] for i in inputs}) == len(inputs), "filestream ids must be unique"
        out = fb["output.logstash"]
        assert out["hosts"] == [f"{a}:5044" for a in facts["logging_addresses"]]
        assert out["ssl.verification_mode"] == "full"
        assert out["ssl.certificate"] and out["ssl.key"]  # Logstash requires client certificates


def test_filebeat_ships_the_conventional_logs(renders):
    """docs/conventions.md: app /var/log/kv/kv-<port>.log, nginx /var/log/nginx/kv_access.json."""
    render = renders["lab-like"]
    paths = {}
    for host in render.hosts_with("filebeat.yml"):
        for item in yaml.safe_load(render.files[host]["filebeat.yml"])["filebeat.inputs"]:
            paths.setdefault(item["fields"]["log_type"], set()).update(item["paths"])
    assert paths["app"] == {"/var/log/kv/kv-*.log"}
    assert paths["nginx"] == {"/var/log/nginx/kv_access.json"}
    assert paths["postgresql"] == {"/var/log/postgresql/postgresql-*.log"}


def test_api_bodies(render):
    host = render.hosts_with("elasticsearch.yml")[0]
    api = render.api[host]
    json.dumps(api)  # every body is plain JSON
    ilm = api["ilm_policy"]["phases"]
    assert re.fullmatch(r"\d+d", ilm["delete"]["min_age"])
    assert ilm["hot"]["actions"]["rollover"]
    template = api["index_template"]
    assert template["index_patterns"] == ["logs-kv.*-*"]
    assert template["data_stream"] == {}
    assert template["priority"] > 100  # above the built-in logs-*-* template
    assert template["template"]["settings"]["index.number_of_replicas"] == (
        0 if len(render.hosts_with("elasticsearch.yml")) == 1 else 1
    )
    assert api["data_view"]["data_view"]["title"] == "logs-kv.*"
    assert {s["id"] for s in api["saved_searches"]} == {"kv-errors", "kv-slow-requests"}


def test_retention_comes_from_the_variable(renders):
    assert renders["lab-like"].api["log1"]["ilm_policy"]["phases"]["delete"]["min_age"] == "14d"
    assert renders["cluster"].api["log1"]["ilm_policy"]["phases"]["delete"]["min_age"] == "30d"


def test_lab_inventory_maps_the_elk_secrets_from_the_vault(renders):
    """docs/conventions.md: inventories map vault variables to role variables. Without the mapping
    the role's preflight refuses to run, which the lab only notices once Elastic's repository is
    reachable; this says so now."""
    if "inventory/lab" not in renders:
        pytest.skip("no inventory/lab/hosts.yml")
    render = renders["inventory/lab"]
    assert render.returncode == 0, render.log[-4000:]
    host = render.hosts_with("elasticsearch.yml")[0]
    secrets = render.api[host]["facts"]["secrets"]
    names = ["elk_elastic_password", "elk_kibana_system_password", "elk_logstash_writer_password"]
    missing = [n for n, value in zip(names, secrets, strict=True) if not value]
    if missing:
        pytest.skip(
            "inventory/lab does not map " + ", ".join(missing) + " (e.g. elk_elastic_password: "
            '"{{ vault_elastic_password }}" in inventory/lab/group_vars/all/secrets.yml); the elk '
            "role would refuse to run in the lab"
        )
    assert all(secrets)


def test_lab_sizes_the_elasticsearch_heap(renders):
    """In a container the host's whole memory is visible: the lab must size the heap itself."""
    if "inventory/lab" not in renders:
        pytest.skip("no inventory/lab/hosts.yml")
    render = renders["inventory/lab"]
    assert render.returncode == 0, render.log[-4000:]
    for host in render.hosts_with("elasticsearch.yml"):
        heap = render.api[host]["facts"]["heap_mb"]
        if heap > 4096:
            pytest.skip(
                f"inventory/lab leaves {host}'s Elasticsearch heap at {heap} MiB (half of this "
                "machine, shared by every lab container): set elk_elasticsearch_heap_mb "
                "(e.g. 1024) "
                "and elk_logstash_heap_mb (e.g. 512) for the logging hosts"
            )
