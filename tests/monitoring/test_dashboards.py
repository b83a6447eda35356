"""The vendored Grafana dashboards of prometheus_grafana.

Static checks (always): valid JSON, every PromQL expression parses (promtool check rules on a
generated rules file, one recording rule per expression: promtool has no bare PromQL parser),
no ${DS_...} import placeholders, every datasource is the provisioned one (by uid).

Live check (when KV_PROMETHEUS_URL points at the lab's Prometheus): every expression returns
data, so that no panel shows "No data". The panels' rates look back 2 minutes, so the check first
sends its own traffic through the lab's balancer (writes, reads at every level, a listing) for a
bounded time that spans several scrapes, rather than relying on what ran before. Without the URL
it is skipped, with the reason, never passed.
"""

import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.lab_monitoring import lab_monitoring

ROLE = Path(__file__).resolve().parents[2] / "roles" / "prometheus_grafana"
DASHBOARDS = sorted((ROLE / "files" / "dashboards").glob("*.json"))
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
DATASOURCE_UID = DEFAULTS["prometheus_grafana_grafana_datasource_uid"]
PROMETHEUS_URL = os.environ.get("KV_PROMETHEUS_URL", "").rstrip("/")

# What Grafana substitutes for its built-in interval variables; any other variable is a label
# matcher regex (multi-value, "All" = .*).
BUILTIN_VARIABLES = {"__rate_interval": "2m", "__interval": "1m", "__range": "1h"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.S)
QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)


def substitute(expr):
    def value(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return BUILTIN_VARIABLES.get(name, ".*")

    return VARIABLE.sub(value, expr)


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def expressions(path):
    """(id, expression as sent to Prometheus) for every query of one dashboard."""
    dash = json.loads(path.read_text())
    out = []
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append(
                    (f"{path.stem}/{p.get('title')}/{t.get('refId')}", substitute(t["expr"]))
                )
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        query = v.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        if m := LABEL_VALUES.match(query):
            expr = f"count by ({m.group(2)}) ({substitute(m.group(1))})"
        elif m := QUERY_RESULT.match(query):
            expr = substitute(m.group(1))
        else:
            continue  # label_names(), metrics(): no PromQL to check
        out.append((f"{path.stem}/variable ${v['name']}", expr))
    return out


ALL_EXPRESSIONS = [e for path in DASHBOARDS for e in expressions(path)]


def test_there_are_dashboards_for_every_concern():
    assert {p.stem for p in DASHBOARDS} >= {"kv-service", "kv-postgresql", "kv-nginx", "kv-hosts"}
    assert len(ALL_EXPRESSIONS) > 20


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_provisionable(path):
    text = path.read_text()
    dash = json.loads(text)
    assert "${DS_" not in text, "import placeholder left: use the provisioned datasource uid"
    assert "__inputs" not in dash and "__requires" not in dash, "exported for sharing: re-export"
    assert dash.get("uid") and dash.get("title")
    assert dash.get("id") is None, "provisioned dashboards carry no numeric id"
    ids = [p["id"] for p in panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_datasource_is_the_provisioned_one(path):
    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    assert value == {"type": "prometheus", "uid": DATASOURCE_UID}, (
                        f"{where}: datasource {value!r}, expected uid {DATASOURCE_UID!r} "
                        "(prometheus_grafana_grafana_datasource_uid)"
                    )
                else:
                    walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(json.loads(path.read_text()), path.name)


def test_uids_and_titles_are_unique():
    dashes = [json.loads(p.read_text()) for p in DASHBOARDS]
    assert len({d["uid"] for d in dashes}) == len(dashes)
    assert len({d["title"] for d in dashes}) == len(dashes)


def test_every_expression_parses(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is missing: install Debian's `prometheus` package (it ships promtool)"
        )

    def check(items):
        rules = {
            "groups": [
                {
                    "name": "dashboards",
                    "rules": [
                        {"record": f"dashboard:expr_{i}", "expr": expr}
                        for i, (_, expr) in enumerate(items)
                    ],
                }
            ]
        }
        f = tmp_path / "dashboards.rules.yml"
        f.write_text(yaml.safe_dump(rules))
        return subprocess.run(
            [promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=30
        )

    run = check(ALL_EXPRESSIONS)
    if run.returncode != 0:  # name the culprits, one by one
        bad = []
        for ident, expr in ALL_EXPRESSIONS:
            one = check([(ident, expr)])
            if one.returncode != 0:
                bad.append(f"{ident}: {expr}\n  {(one.stdout + one.stderr).strip()}")
        pytest.fail("PromQL that does not parse:\n" + "\n".join(bad))


def query(expr):
    """Ask the lab's Prometheus (HTTPS verified with the lab's CA, basic auth: lab_monitoring)."""
    response = lab_monitoring().get(f"{PROMETHEUS_URL}/api/v1/query", params={"query": expr})
    response.raise_for_status()
    return response.json()


def has_data(data):
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        return math.isfinite(float(result[1]))
    if kind == "vector":
        return any(math.isfinite(float(r["value"][1])) for r in result)
    if kind == "matrix":
        return any(math.isfinite(float(v[1])) for r in result for v in r["values"])
    return bool(result)


# Traffic before the live check: long enough for Prometheus (15 s scrapes) to see every request
# counter and histogram move within the panels' 2-minute rate window; bounded in time and count.
TRAFFIC_SECONDS = 35
TRAFFIC_MAX_ROUNDS = 400


@pytest.fixture(scope="module")
def recent_traffic():
    """Writes, reads at every consistency level and a listing through the lab's balancer."""
    from tests.stack.harness import Lab

    lab = Lab.from_repo()
    session = lab.session()
    deadline = time.monotonic() + TRAFFIC_SECONDS
    answered = 0
    for n in range(TRAFFIC_MAX_ROUNDS):
        if time.monotonic() > deadline:
            break
        key = f"dashboards-{n % 10}"
        calls = [
            ("put", {"w": "quorum"}, {"value": {"n": n}}),
            ("get", {"r": "quorum"}, None),
            ("get", {"r": "one"}, None),
            ("get", {"r": "primary"}, None),
        ]
        for method, params, body in calls:
            r = session.request(method, f"{lab.base}/api/kv/{key}", params=params, json=body,
                                timeout=10)
            answered += r.status_code < 300
        r = session.get(f"{lab.base}/api/kv/", params={"prefix": "dashboards-"}, timeout=10)
        answered += r.status_code < 300
        time.sleep(0.2)
    assert answered, "the lab answered none of the dashboards' traffic"
    time.sleep(16)  # one more scrape after the last request
    return answered


@pytest.mark.lab  # the lab's Prometheus: `make test-stack` runs these after the stack tests
@pytest.mark.parametrize(("ident", "expr"), ALL_EXPRESSIONS, ids=[i for i, _ in ALL_EXPRESSIONS])
def test_expression_returns_data_from_live_prometheus(ident, expr, request):
    if not PROMETHEUS_URL:
        pytest.skip(
            "KV_PROMETHEUS_URL is not set: no live Prometheus to evaluate dashboard queries "
            "against (make test-stack sets it to the lab's Prometheus)"
        )
    request.getfixturevalue("recent_traffic")
    answer = query(expr)
    assert answer["status"] == "success", answer
    assert has_data(answer["data"]), (
        f"{ident} returns no data (the panel would show 'No data'):\n  {expr}\n  {answer['data']}"
    )
