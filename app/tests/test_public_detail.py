"""What a client on the public side (a request the balancer forwarded, which carries
X-Forwarded-For) is told when nodes fail: no internal address or port in an error body, and a
/readyz without the reasons. Requests straight to an instance (the internal listener: the
balancer's checks, Prometheus, operators) keep the detail."""

import json

from tests.conftest import refresh_nodes, unique

PUBLIC = {"HTTP_X_FORWARDED_FOR": "203.0.113.9", "HTTP_X_FORWARDED_PROTO": "https"}


def _internal_strings(cluster) -> list[str]:
    out = ["127.0.0.1"]
    for node in cluster.nodes:
        out += [f"port {node.port}", f":{node.port}"]
    return out


def _assert_no_internal(cluster, text: str) -> None:
    for s in _internal_strings(cluster):
        assert s not in text, f"{s!r} in a public answer: {text}"


def test_public_errors_and_readyz_name_no_internal_address(client, restore):
    cluster = restore
    cluster.stop(cluster.node("p1"))
    state = refresh_nodes()
    assert state.primary is None
    key = unique("public")

    internal = client.put(f"/api/kv/{key}", json.dumps({"value": 1}),
                          content_type="application/json")
    assert internal.status_code == 503, internal.content
    assert "p1" in internal.json()["nodes"]

    public = client.put(f"/api/kv/{key}", json.dumps({"value": 1}),
                        content_type="application/json", **PUBLIC)
    assert public.status_code == 503, public.content
    body = public.json()
    assert body["error"] == "quorum_unavailable" and "p1" in body["nodes"], body
    _assert_no_internal(cluster, public.content.decode())

    read = client.get(f"/api/kv/{key}?r=primary", **PUBLIC)
    assert read.status_code == 503, read.content
    _assert_no_internal(cluster, read.content.decode())

    ready = client.get("/readyz", **PUBLIC)
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "error": "not_ready",
                            "detail": "the service is not ready"}, ready.content

    ready_internal = client.get("/readyz")
    assert ready_internal.status_code == 503
    assert "no primary is reachable" in ready_internal.json()["detail"]


def test_public_readyz_when_ready(client, restore):
    restore.wait_streaming(2)
    refresh_nodes()
    ready = client.get("/readyz", **PUBLIC)
    assert ready.status_code == 200, ready.content
    assert ready.json() == {"ready": True}
