"""testinfra checks of node_exporter on every host of the scenario: HTTPS with basic auth only."""

import json

from tests import host_http

testinfra_hosts = ["all"]

CA = "/etc/prometheus/node-exporter/ca.crt"


def address(host):
    """The host's internal address: the first of `hostname -I` (the scenario's network)."""
    return host.check_output("hostname -I").split()[0]


def fetch(host, url, user=None, password=None, ca=CA):
    return host_http.request(host, url, user=user, password=password, ca=ca)


def test_node_exporter_running_enabled_on_internal_address(host):
    svc = host.service("prometheus-node-exporter")
    assert svc.is_running and svc.is_enabled
    assert host.socket(f"tcp://{address(host)}:9100").is_listening
    password = host.ansible.get_variables()["node_exporter_scrape_password"]
    answer = fetch(host, f"https://{address(host)}:9100/metrics", "prometheus", password)
    assert answer["status"] == 200, answer
    # the container's root file system (overlay) is kept by the filesystem collector
    assert (
        'node_filesystem_avail_bytes{device="overlay",fstype="overlay",mountpoint="/"}'
        in answer["body"]
    )


def test_node_exporter_refuses_plain_http_anonymous_and_unverified_clients(host):
    url = f"https://{address(host)}:9100/metrics"
    password = host.ansible.get_variables()["node_exporter_scrape_password"]
    assert fetch(host, url.replace("https:", "http:"))["status"] != 200
    assert fetch(host, url)["status"] == 401
    assert fetch(host, url, "prometheus", "not-the-password")["status"] == 401
    unverified = fetch(host, url, "prometheus", password, ca=None)
    assert unverified["status"] is None and "CERTIFICATE_VERIFY_FAILED" in unverified["error"]


def test_web_config_holds_a_bcrypt_hash_not_the_password(host):
    config = json.loads(host.file("/etc/prometheus/node-exporter/web.json").content_string)
    password = host.ansible.get_variables()["node_exporter_scrape_password"]
    assert config["tls_server_config"]["min_version"] == "TLS13"
    assert config["basic_auth_users"]["prometheus"].startswith("$2b$10$")
    assert password not in json.dumps(config)
    key = host.file("/etc/prometheus/node-exporter/server.key")
    assert (key.user, key.group, key.mode) == ("root", "prometheus", 0o640)


def test_no_failed_units(host):
    failed = host.run("systemctl --failed --no-legend --plain").stdout.strip()
    assert failed == "", f"failed units: {failed}"
