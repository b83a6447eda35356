"""testinfra checks of Grafana (prometheus_grafana) when its apt repository was reachable.

When converge found the repository unreachable it recorded why in the local fact file: every test
here is then SKIPPED with that reason (run pytest with -rs to read it), never passed.
"""

import base64
import json
from pathlib import Path

import pytest

testinfra_hosts = ["grafana-mon1"]

FACT = "/etc/ansible/facts.d/prometheus_grafana.fact"
PASSWORD = "pa'ss \"w$rd `x` 1"  # molecule.yml's prometheus_grafana_grafana_admin_password
DASHBOARDS = Path(__file__).resolve().parents[3] / "roles/prometheus_grafana/files/dashboards"


def address(host):
    return host.check_output("hostname -I").split()[0]


def request(host, path, user=None, password=None):
    """(status, body) of GET http://<address>:3000<path> from inside the host."""
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    url = f"http://{address(host)}:3000{path}"
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        f"req = urllib.request.Request({url!r}, headers={headers!r})\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=10)\n"
        "    print(json.dumps([r.status, r.read().decode()]))\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(json.dumps([e.code, e.read().decode()]))\n"
    )
    encoded = base64.b64encode(script.encode()).decode()  # newlines and quotes survive the shell
    out = host.check_output(f"python3 -c \"import base64; exec(base64.b64decode('{encoded}'))\"")
    status, body = json.loads(out)
    return status, body


@pytest.fixture
def grafana(host):
    fact = host.file(FACT)
    if not fact.exists:
        pytest.fail(f"{FACT} is missing: converge did not run the role nor record a skip")
    skipped = json.loads(fact.content_string)["skipped_components"]
    for s in skipped:
        if s["component"] == "grafana":
            pytest.skip(f"Grafana skipped: {s['reason']}")
    return host


def test_grafana_running_and_enabled(grafana):
    svc = grafana.service("grafana-server")
    assert svc.is_running and svc.is_enabled
    assert request(grafana, "/api/health")[0] == 200


def test_admin_login_with_vault_password(grafana):
    status, body = request(grafana, "/api/user", "admin", PASSWORD)
    assert status == 200, body
    assert json.loads(body)["login"] == "admin"
    assert request(grafana, "/api/user", "admin", "wrong password")[0] == 401


def test_anonymous_access_is_off(grafana):
    assert request(grafana, "/api/search")[0] == 401
    assert request(grafana, "/api/dashboards/uid/kv-service")[0] == 401


def test_datasource_provisioned_with_fixed_uid_and_healthy(grafana):
    status, body = request(grafana, "/api/datasources/uid/kv-prometheus", "admin", PASSWORD)
    assert status == 200, body
    ds = json.loads(body)
    assert ds["type"] == "prometheus" and ds["isDefault"]
    status, body = request(grafana, "/api/datasources/uid/kv-prometheus/health", "admin", PASSWORD)
    assert status == 200 and json.loads(body)["status"] == "OK", body


def test_every_vendored_dashboard_is_provisioned(grafana):
    status, body = request(grafana, "/api/search?type=dash-db", "admin", PASSWORD)
    assert status == 200, body
    provisioned = {d["uid"] for d in json.loads(body)}
    vendored = {json.loads(p.read_text())["uid"] for p in DASHBOARDS.glob("*.json")}
    assert vendored <= provisioned
