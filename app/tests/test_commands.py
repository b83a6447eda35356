"""Management commands and the production settings check."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import make_client

APP_DIR = Path(__file__).resolve().parent.parent


def run(*args, stdin=None):
    out = io.StringIO()
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        call_command("kv_token", *args, stdout=out)
    finally:
        sys.stdin = old
    return out.getvalue().strip()


def test_kv_token_create_is_idempotent_and_works():
    from django.test import Client
    from kv.auth import clear_cache

    token = "tok-" + "a" * 30
    assert run("create", "--name", "cmd-test", "--token", token, "--scopes", "read") == "changed"
    assert run("create", "--name", "cmd-test", "--token", token, "--scopes", "read") == \
        "unchanged"
    assert run("create", "--name", "cmd-test", "--token", token, "--scopes", "read,write") == \
        "changed"
    assert run("create", "--name", "cmd-test", "--token", token, "--scopes", "write,read") == \
        "unchanged"
    clear_cache()
    c = Client(headers={"Authorization": f"Bearer {token}"})
    assert c.put("/api/kv/cmd-key", {"value": 1}, content_type="application/json").status_code \
        in (200, 201)
    # rotating the token: the old one stops working
    assert run("create", "--name", "cmd-test", "--token-stdin", "--scopes", "read,write",
               stdin="tok-" + "b" * 30 + "\n") == "changed"
    clear_cache()
    assert c.get("/api/kv/cmd-key").status_code == 401
    listed = [json.loads(line) for line in run("list").splitlines()]
    assert {"name": "cmd-test", "scopes": ["read", "write"]}.items() <= next(
        t for t in listed if t["name"] == "cmd-test").items()
    assert all("token" not in t and "token_sha256" not in t for t in listed)
    assert run("revoke", "--name", "cmd-test") == "changed"
    assert run("revoke", "--name", "cmd-test") == "unchanged"


@pytest.mark.parametrize("args", [
    ("create", "--name", "x", "--token", "short", "--scopes", "read"),
    ("create", "--name", "x", "--token", "a" * 20, "--scopes", "admin"),
    ("create", "--name", "bad name", "--token", "a" * 20, "--scopes", "read"),
    ("create", "--name", "x", "--token", "a b" * 10, "--scopes", "read"),
])
def test_kv_token_refuses_bad_input(args):
    with pytest.raises(CommandError):
        run(*args)


def test_kv_token_sync():
    from tests.conftest import TOKENS

    keep = [{"name": n, "token": t, "scopes": s.split(",")} for n, t, s in TOKENS.values()]
    extra = {"name": "sync-extra", "token": "sync-" + "c" * 30, "scopes": "read"}
    assert run("sync", stdin=json.dumps([*keep, extra])) == "changed"
    assert run("sync", stdin=json.dumps([*keep, extra])) == "unchanged"
    assert run("sync", stdin=json.dumps(keep)) == "changed"  # sync-extra revoked
    assert "sync-extra" not in run("list")
    assert make_client("rw").get("/api/cluster").status_code == 200


def test_benchmark_db():
    make_client("rw").put("/api/kv/benchmark-db-key", {"value": 1},
                          content_type="application/json")
    out = io.StringIO()
    call_command("benchmark_db", "--count", "50", "--warmup", "5", "--json", stdout=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {r["node"] for r in rows} == {"p1", "s1", "s2"}
    assert all(r["p50_ms"] > 0 for r in rows)
    assert {r["role"] for r in rows} == {"primary", "standby"}


def test_check_deploy_is_clean():
    env = {**os.environ, "DJANGO_DEBUG": "false", "DJANGO_ALLOWED_HOSTS": "kv.example.org"}
    res = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level",
                          "WARNING"], cwd=APP_DIR, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no issues" in res.stdout


def test_no_missing_migrations():
    res = subprocess.run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
                         cwd=APP_DIR, env=os.environ, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def _db_options(**env_vars) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_DB_SSL")
           and k != "KV_DB_CHANNEL_BINDING"}
    script = ("import json; from django.conf import settings; "
              "print(json.dumps({a: d['OPTIONS'] for a, d in settings.DATABASES.items()}))")
    res = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=APP_DIR,
                         env={**env, **env_vars}, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])  # after shell's own notes


def test_database_tls_from_the_environment():
    options = _db_options(KV_DB_SSLMODE="verify-full", KV_DB_SSLROOTCERT="/etc/kv/db-ca.crt",
                          KV_DB_CHANNEL_BINDING="require")
    assert "default" in options and len(options) > 1  # default + one alias per node
    for alias, opts in options.items():
        assert (opts["sslmode"], opts["sslrootcert"], opts["channel_binding"]) == (
            "verify-full", "/etc/kv/db-ca.crt", "require"), alias
    # unset: libpq's own defaults (the loopback test cluster has no TLS)
    for opts in _db_options().values():
        assert opts["sslmode"] == "prefer"
        assert "sslrootcert" not in opts and "channel_binding" not in opts


def test_settings_refuse_missing_secret():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    res = subprocess.run([sys.executable, "manage.py", "check"], cwd=APP_DIR, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DJANGO_SECRET_KEY" in res.stderr


def _purge(*args) -> list[str]:
    out = io.StringIO()
    call_command("kv_purge_tombstones", *args, stdout=out)
    return out.getvalue().splitlines()


def test_purge_tombstones():
    client = make_client("rw")
    client.put("/api/kv/purge-me", {"value": 1}, content_type="application/json")
    assert client.delete("/api/kv/purge-me").status_code == 204
    from kv.models import KVItem

    KVItem.objects.using("default").filter(pk="purge-me").update(
        updated_at="2000-01-01T00:00:00Z")
    lines = _purge("--older-than", "3600")
    assert lines[-1].startswith("changed") and lines[0].startswith("purged"), lines
    assert not KVItem.objects.using("default").filter(pk="purge-me").exists()
    assert _purge("--older-than", "3600")[-1] == "unchanged"


def test_purge_zero_horizon_keeps_rewritten_keys_and_runs_alone(cluster):
    """With every node caught up a zero horizon purges a fresh tombstone; a key written again
    is never purged; a second run while one holds the lock does nothing."""
    from kv.management.commands.kv_purge_tombstones import LOCK_KEY
    from kv.models import KVItem

    client = make_client("rw")
    gone, back = "purge-zero-gone", "purge-zero-back"
    for key in (gone, back):
        client.put(f"/api/kv/{key}", {"value": 1}, content_type="application/json")
        assert client.delete(f"/api/kv/{key}").status_code == 204
    assert client.put(f"/api/kv/{back}", {"value": 2},
                      content_type="application/json").status_code == 201
    other = cluster.connect(cluster.primary)  # advisory locks are per database, any role
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        assert _purge("--older-than", "0") == ["skipped: another purge is running", "unchanged"]
        assert KVItem.objects.using("default").filter(pk=gone).exists()
    finally:
        other.close()
    report = json.loads(_purge("--older-than", "0", "--json")[0])
    assert report["purged"] >= 1 and report["held_back"] == 0 and not report["blockers"], report
    assert not KVItem.objects.using("default").filter(pk=gone).exists()
    assert KVItem.objects.using("default").get(pk=back).deleted is False
    with pytest.raises(CommandError):
        call_command("kv_purge_tombstones", "--older-than", "-1", stdout=io.StringIO())


def _readme_secret_key_recipe() -> str:
    """The command the repository README gives for vault_django_secret_key (the recipe after
    the variable's name, else the README's general one)."""
    text = (Path(APP_DIR).parent / "README.md").read_text()
    at = text.find("vault_django_secret_key")
    found = re.search(r"`(openssl rand [^`]+)`", text[at:] if at >= 0 else text)
    assert found, "no `openssl rand ...` recipe in README.md"
    return found.group(1)


def test_readme_secret_key_recipe_passes_check_deploy():
    """A key made by the README's recipe passes check --deploy (no security.W009)."""
    recipe = _readme_secret_key_recipe()
    key = subprocess.run(recipe, shell=True, capture_output=True, text=True, timeout=10,
                         check=True).stdout.strip()
    env = {**os.environ, "DJANGO_DEBUG": "false", "DJANGO_ALLOWED_HOSTS": "kv.example.org",
           "DJANGO_SECRET_KEY": key}
    res = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level",
                          "WARNING"], cwd=APP_DIR, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "W009" not in res.stdout + res.stderr, (
        f"{recipe!r} made a key Django refuses: {res.stdout}{res.stderr}")
