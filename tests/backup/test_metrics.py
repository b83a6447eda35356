"""The pgBackRest metrics writer (roles/pgbackrest/files/pgbackrest_metrics.py) on a real
`pgbackrest info --output=json` document (fixtures/info.json) and on variants of it: the names and
labels the alerts read, a full counting as a diff and an incr, the repository size, the failure
file, the atomic write.

The fixture is the lab's (Debian 12's pgBackRest 2.45, stanza kv, repository encrypted with
aes-256-cbc, the first full backup playbooks/backup.yml takes), captured on backup1 with
    runuser -u pgbackrest -- pgbackrest --stanza=kv --output=json info
"""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pgbackrest_metrics as metrics  # roles/pgbackrest/files, on pytest's pythonpath
import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "info.json"
SAMPLE = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? (\S+)$")




def parse(text):
    """{(name, frozenset of label pairs): value} of every sample."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        out[(name, pairs)] = float(value)
    return out


def key(name, **labels):
    return (name, frozenset(labels.items()))


def run(tmp_path, info):
    doc = tmp_path / "info.json"
    doc.write_text(json.dumps(info) if not isinstance(info, str) else info)
    rc = metrics.main(["--stanza=kv", f"--dir={tmp_path}", f"--info-json={doc}"])
    return rc, (tmp_path / "pgbackrest.prom").read_text()


@pytest.fixture
def info():
    return json.loads(FIXTURE.read_text())


def _backup(info, kind):
    return [b for b in info[0]["backup"] if b["type"] == kind]


def test_fixture_is_a_real_document_with_a_full_backup(info):
    assert [s["name"] for s in info] == ["kv"]
    assert info[0]["status"]["code"] == 0
    assert info[0]["cipher"] == "aes-256-cbc"
    assert _backup(info, "full"), "the fixture should hold a full backup"


def test_metrics_of_the_lab_document(tmp_path, info):
    rc, text = run(tmp_path, info)
    assert rc == 0
    got = parse(text)
    counted = {"full": ("full",), "diff": ("full", "diff"), "incr": ("full", "diff", "incr")}
    for kind, types in counted.items():
        newest = max(
            (b for b in info[0]["backup"] if b["type"] in types),
            key=lambda b: b["timestamp"]["stop"],
        )
        labels = {"stanza": "kv", "type": kind}
        assert (
            got[key("pgbackrest_backup_last_completion_timestamp_seconds", **labels)]
            == (newest["timestamp"]["stop"])
        )
        assert (
            got[key("pgbackrest_backup_last_size_bytes", **labels)]
            == (newest["info"]["repository"]["delta"])
        )
    assert got[key("pgbackrest_repo_size_bytes", stanza="kv")] == sum(
        b["info"]["repository"]["delta"] for b in info[0]["backup"]
    )
    assert got[key("pgbackrest_stanza_status", stanza="kv")] == 0
    assert got[key("pgbackrest_metrics_up")] == 1
    newest_stop = max(b["timestamp"]["stop"] for b in info[0]["backup"])
    assert got[key("pgbackrest_metrics_last_success_timestamp_seconds")] > newest_stop


def test_a_newer_diff_counts_for_diff_and_incr_not_for_full(tmp_path, info):
    full = max(_backup(info, "full"), key=lambda b: b["timestamp"]["stop"])
    diff = copy.deepcopy(full)
    diff.update(type="diff", label=full["label"] + "_D", prior=full["label"])
    diff["timestamp"] = {
        "start": full["timestamp"]["stop"] + 100,
        "stop": full["timestamp"]["stop"] + 160,
    }
    diff["info"]["repository"]["delta"] = 12345
    info[0]["backup"].append(diff)
    rc, text = run(tmp_path, info)
    got = parse(text)
    stop = "pgbackrest_backup_last_completion_timestamp_seconds"
    assert rc == 0
    assert got[key(stop, stanza="kv", type="full")] == full["timestamp"]["stop"]
    assert got[key(stop, stanza="kv", type="diff")] == diff["timestamp"]["stop"]
    assert got[key(stop, stanza="kv", type="incr")] == diff["timestamp"]["stop"]
    assert got[key("pgbackrest_backup_last_size_bytes", stanza="kv", type="diff")] == 12345
    assert got[key("pgbackrest_repo_size_bytes", stanza="kv")] == sum(
        b["info"]["repository"]["delta"] for b in info[0]["backup"]
    )


def test_no_backup_leaves_the_backup_series_absent(tmp_path, info):
    info[0]["backup"] = []
    info[0]["status"] = {"code": 2, "message": "no valid backups"}
    rc, text = run(tmp_path, info)
    got = parse(text)
    assert rc == 0
    assert not [k for k in got if k[0].startswith("pgbackrest_backup_")]
    assert got[key("pgbackrest_stanza_status", stanza="kv")] == 2
    assert got[key("pgbackrest_repo_size_bytes", stanza="kv")] == 0


def test_an_unreadable_state_says_so_and_keeps_the_last_success(tmp_path, info):
    rc, text = run(tmp_path, info)
    last = parse(text)[key("pgbackrest_metrics_last_success_timestamp_seconds")]
    rc, text = run(tmp_path, "ERROR: [056]: unable to connect")
    got = parse(text)
    assert rc == 1
    assert got == {
        key("pgbackrest_metrics_up"): 0,
        key("pgbackrest_metrics_last_success_timestamp_seconds"): last,
    }


def test_an_unknown_stanza_is_a_failure(tmp_path, info):
    info[0]["name"] = "other"
    rc, text = run(tmp_path, info)
    assert rc == 1
    assert parse(text) == {key("pgbackrest_metrics_up"): 0}


def test_the_file_is_replaced_whole_and_readable(tmp_path, info):
    run(tmp_path, info)
    assert [p.name for p in tmp_path.iterdir() if p.name != "info.json"] == ["pgbackrest.prom"]
    assert (tmp_path / "pgbackrest.prom").stat().st_mode & 0o777 == 0o644


def test_the_file_passes_promtool(tmp_path, info):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is missing: install Debian's `prometheus` package (it ships promtool)"
        )
    _, text = run(tmp_path, info)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
