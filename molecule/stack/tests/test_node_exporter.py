"""testinfra on every lab host: the node exporter's web configuration (role pki, entry point
web_config) holds TLS 1.3 and a bcrypt hash of the scrape password (role pki's entry point bcrypt:
its salt derived from host, file and user), never the password; its key is readable by the
exporter's group only. Its listener's refusals are in test_monitoring_tls.py,
its collectors in test_hardening.py."""

import hashlib
import json

testinfra_hosts = ["all"]


def test_web_config_holds_a_bcrypt_hash_not_the_password(host):
    config = json.loads(host.file("/etc/prometheus/node-exporter/web.json").content_string)
    password = host.ansible.get_variables()["vault_monitoring_scrape_password"]
    assert config["tls_server_config"]["min_version"] == "TLS13"
    hashed = config["basic_auth_users"]["prometheus"]
    assert hashed.startswith("$2b$10$")
    # the salt: sha256("<inventory name>:<file>:<user>")[:21] + "." (the same on every run)
    seed = f"{host.backend.get_hostname()}:/etc/prometheus/node-exporter/web.json:prometheus"
    assert hashed[7:29] == hashlib.sha256(seed.encode()).hexdigest()[:21] + ".", hashed[:29]
    assert password not in json.dumps(config)
    key = host.file("/etc/prometheus/node-exporter/server.key")
    assert (key.user, key.group, key.mode) == ("root", "prometheus", 0o640)
