from tests.conftest import unique


def test_put_get(client):
    key = unique()
    r = client.put(f"/api/kv/{key}", {"value": {"a": 1}}, content_type="application/json")
    assert r.status_code == 201, r.content
    r = client.get(f"/api/kv/{key}")
    assert r.status_code == 200, r.content
    assert r.json()["value"] == {"a": 1}
