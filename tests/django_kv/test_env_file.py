"""Role django_kv's /etc/kv/env (templates/env.j2) as the role renders it for the lab's first app
host, with secrets that hold quotes, dollars, backticks, backslashes and spaces: systemd reads
every value back unchanged (the django secret key and the app's database password included).

systemd parses an EnvironmentFile= with the rules of its env-file parser (systemd.exec(5),
"EnvironmentFile="; src/basic/env-file.c): `KEY=value` lines, `#` and `;` comments, double-quoted
values where a backslash escapes only `"`, `\\`, `` ` `` and `$` (kept otherwise) and nothing is
expanded. ``systemd_env`` below follows those rules for the lines env.j2 writes.
"""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "tests" / "django_kv" / "render_env.yml"

SECRET_KEY = (
    "test-only secret key with 'quotes\" $dollars $(x) ${y} `ticks` \\back\\slash 0123456789"
)
DB_PASSWORD = "pa'ss \"w$rd `x` 1 \\"
SHELL_NEED_ESCAPE = '"\\`$'


def systemd_env(text: str) -> dict[str, str]:
    """An EnvironmentFile's assignments, for lines of the form KEY="value" (env.j2's)."""
    env = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        key, sep, raw = stripped.partition("=")
        assert sep and key.strip() == key and key, f"not an assignment: {line!r}"
        assert raw.startswith('"') and raw.endswith('"') and len(raw) >= 2, line
        value, i, body = [], 0, raw[1:-1]
        while i < len(body):
            c = body[i]
            if c == "\\":
                assert i + 1 < len(body), f"a value ends in a lone backslash: {line!r}"
                nxt = body[i + 1]
                value.append(nxt if nxt in SHELL_NEED_ESCAPE else "\\" + nxt)
                i += 2
                continue
            assert c != '"', f"an unescaped quote ends the value early: {line!r}"
            value.append(c)
            i += 1
        env[key] = "".join(value)
    return env


def test_parser_follows_systemds_escapes():
    assert systemd_env('A="x\\"y\\\\z\\$w\\`v\\n"') == {"A": 'x"y\\z$w`v\\n'}
    with pytest.raises(AssertionError):
        systemd_env('A="x"y"')


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("django_kv_env")
    out = tmp / "env"
    extra = tmp / "vars.json"
    extra.write_text(json.dumps({
        "django_kv_secret_key": SECRET_KEY,
        "django_kv_db_password": DB_PASSWORD,
        "django_kv_render_out": str(out),
    }))
    run = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), str(PLAYBOOK),
         "-i", str(ROOT / "inventory" / "lab"),
         "--vault-password-file", str(ROOT / "inventory" / "lab" / "vault-password.txt"),
         "--tags", "django_kv_render", "-e", f"@{extra}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return out.read_text()


def test_secrets_read_back_unchanged(rendered):
    env = systemd_env(rendered)
    assert env["DJANGO_SECRET_KEY"] == SECRET_KEY
    assert env["KV_DB_PASSWORD"] == DB_PASSWORD


def test_every_line_is_a_comment_or_one_quoted_assignment(rendered):
    env = systemd_env(rendered)
    assignments = [ln for ln in rendered.splitlines() if ln.strip() and ln.strip()[0] not in "#;"]
    assert len(assignments) == len(env), "a name is assigned twice"
    assert {"DJANGO_SECRET_KEY", "KV_DB_PASSWORD", "KV_DB_NODES"} <= set(env)
