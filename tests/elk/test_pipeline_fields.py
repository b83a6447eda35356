"""The Logstash pipeline reads only fields that the app's and nginx's real log lines have.

Sample lines come from:
- the app itself: tests/elk/app_log_lines.py runs the app's formatter and request middleware (with
  the app's Python, app/.venv/bin/python or $KV_APP_PYTHON), so renaming a field in the app
  fails here;
- tests/elk/fixtures/{app.jsonl,nginx.jsonl,postgresql.log}, kept in step with the app and the
  nginx role's log_format;
- lines captured from the running lab, when $KV_LAB_LOG_SAMPLES names a directory holding any of
  app.jsonl, nginx.jsonl and postgresql.log (e.g. `docker exec kvlab-app1 tail -n 200
  /var/log/kv/kv-8000.log > DIR/app.jsonl`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from . import lab_samples, nginx_log_lines
from .conftest import HERE, REPO
from .grok import to_regex
from .logstash_config import branches_by_value, parse, parses_as_date, path, unresolved_reads

FIXTURES = HERE / "fixtures"
SAMPLE_FILES = {"app": "app.jsonl", "nginx": "nginx.jsonl", "postgresql": "postgresql.log"}
# Fields Filebeat puts on every event (the raw line is `message`).
FILEBEAT_FIELDS = {("message",), ("fields", "log_type"), ("log", "file", "path"), ("log", "offset")}


def expand(doc: dict) -> dict:
    """Nest dotted keys as the pipeline (and Elasticsearch) does: {"a.b": 1} -> {"a": {"b": 1}}."""
    out: dict = {}
    for key, value in doc.items():
        if key == "@timestamp":
            out[key] = value
            continue
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict):
            node.setdefault(parts[-1], {}).update(expand(value))
        else:
            node[parts[-1]] = value
    return out


def lookup(doc: dict, p: tuple[str, ...]):
    node = doc
    for part in p:
        if not isinstance(node, dict) or part not in node:
            raise KeyError(p)
        node = node[part]
    return node


def has(doc: dict, p: tuple[str, ...]) -> bool:
    try:
        lookup(doc, p)
    except KeyError:
        return False
    return True


@functools.cache
def _app_python() -> str | None:
    candidates = [
        os.environ.get("KV_APP_PYTHON"),
        str(REPO / "app" / ".venv" / "bin" / "python"),
        sys.executable,
    ]
    for exe in filter(None, candidates):
        if not Path(exe).exists():
            continue
        probe = subprocess.run([exe, "-c", "import django, rest_framework"], capture_output=True)
        if probe.returncode == 0:
            return exe
    return None


@functools.cache
def _run_app(*args: str, python: str = sys.executable) -> list[str]:
    done = subprocess.run(
        [python, "-m", "tests.elk.app_log_lines", *args], capture_output=True, text=True,
        timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "app")},
    )
    assert done.returncode == 0, f"the app's logging code failed:\n{done.stderr[-3000:]}"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, "the app's logging code printed nothing"
    return lines


@functools.cache
def _lab_dir() -> tuple[Path | None, str]:
    """Directory of lines captured from the lab, and where they came from."""
    given = os.environ.get("KV_LAB_LOG_SAMPLES")
    if given:
        return Path(given), f"KV_LAB_LOG_SAMPLES={given}"
    dest = Path(tempfile.mkdtemp(prefix="kv-lab-logs-"))
    found = lab_samples.capture(dest)
    if not found:
        return None, "no running lab (containers kvlab-app1, kvlab-lb1, kvlab-pg1) had log lines"
    return dest, "the running lab: " + ", ".join(f"{n} from {c}" for n, c in found.items())


def sample_sets() -> list[tuple[str, str, str]]:
    """(log type, origin, text) of every sample set that does not need the app's Python."""
    out = []
    for log_type, name in SAMPLE_FILES.items():
        out.append((log_type, f"tests/elk/fixtures/{name}", (FIXTURES / name).read_text()))
    lab, _ = _lab_dir()
    if lab is not None:
        found = [(t, lab / n) for t, n in SAMPLE_FILES.items() if (lab / n).exists()]
        assert found, f"{lab} holds none of {sorted(SAMPLE_FILES.values())}"
        out += [(t, f"lab:{f}", f.read_text()) for t, f in found]
    return out


def test_lab_lines_were_checked():
    """Visible in the summary: whether lines of the running lab were checked too."""
    lab, origin = _lab_dir()
    if lab is None:
        pytest.skip(
            f"lab log lines NOT checked: {origin}; set KV_LAB_LOG_SAMPLES=DIR "
            "(python tests/elk/lab_samples.py DIR) or run with the lab up"
        )
    assert any((lab / n).exists() for n in SAMPLE_FILES.values()), origin


@pytest.fixture(scope="module")
def pipeline(renders):
    render = renders["lab-like"]
    assert render.returncode == 0, render.log[-4000:]
    host = render.hosts_with("logstash-kv.conf")[0]
    return parse(render.files[host]["logstash-kv.conf"])


@pytest.fixture(scope="module")
def branches(pipeline):
    found = branches_by_value(pipeline, "[fields][log_type]")
    assert set(found) == set(SAMPLE_FILES), f"pipeline branches: {sorted(found)}"
    return found


@pytest.fixture(scope="module")
def filebeat_inputs(renders):
    render = renders["lab-like"]
    inputs = {}
    for host in render.hosts_with("filebeat.yml"):
        for item in yaml.safe_load(render.files[host]["filebeat.yml"])["filebeat.inputs"]:
            inputs[item["fields"]["log_type"]] = item
    return inputs


def check_json_lines(log_type: str, origin: str, text: str, branches, *, partial=False) -> None:
    """partial: the lines are not a full sample (no access line): check only what every line has."""
    bf = branches[log_type]
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    assert lines, f"{origin}: no lines"
    docs = []
    for n, line in lines:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{origin}:{n}: not one JSON object per line ({exc}): {line[:200]}")
        assert isinstance(doc, dict), f"{origin}:{n}: not a JSON object"
        docs.append((n, expand(doc)))

    needed = [(r, p) for r, p in unresolved_reads(bf, FILEBEAT_FIELDS)]
    unknown = [r for r, p in needed if p is None]
    assert not unknown, f"the {log_type} branch reads fields nothing provides: " + ", ".join(
        f"{'.'.join(r.path)} ({r.where})" for r in unknown
    )
    needed_paths = {p: r for r, p in needed}

    # Every field read exists in the lines; the timestamp in every line.
    if partial:
        needed_paths = {p: r for p, r in needed_paths.items() if r.where.startswith("date")}
    missing = [
        f"{'.'.join(p)} (read by {r.where})"
        for p, r in needed_paths.items()
        if not any(has(doc, p) for _, doc in docs)
    ]
    assert not missing, (
        f"{origin}: the pipeline's {log_type} branch reads fields no line has: {missing}. "
        f"Fields the lines have: {sorted(_leaves(docs[0][1]))}"
    )
    date_reads = [p for p, r in needed_paths.items() if r.where.startswith("date")]
    assert date_reads, f"the {log_type} branch parses no date from the line"
    for n, doc in docs:
        for p in date_reads:
            assert has(doc, p), f"{origin}:{n}: no {'.'.join(p)}, the event's time"
    # nginx writes one shape of line: every line has every field. The app writes request lines
    # and others: at least one line (a request's access line) has every field.
    if partial:
        pass
    elif log_type == "nginx":
        for n, doc in docs:
            absent = [".".join(p) for p in needed_paths if not has(doc, p)]
            assert not absent, f"{origin}:{n}: missing {absent}"
    else:
        assert any(all(has(doc, p) for p in needed_paths) for _, doc in docs), (
            f"{origin}: no line has every field the {log_type} branch reads "
            f"({sorted('.'.join(p) for p in needed_paths)})"
        )

    # Numbers are numbers: what the pipeline converts to integer holds an integer.
    prefix = next(iter(bf.json_targets), ())
    # Dates are dates: the date filter's formats read every line's time.
    for p, formats in bf.dates:
        line_path = p[len(prefix) :] if prefix and p[: len(prefix)] == prefix else p
        for n, doc in docs:
            if has(doc, line_path):
                value = str(lookup(doc, line_path))
                assert parses_as_date(value, formats), (
                    f"{origin}:{n}: {'.'.join(line_path)} = {value!r} matches none of {formats}"
                )
    for p, kind in bf.converts:
        line_path = p[len(prefix) :] if p[: len(prefix)] == prefix and prefix else p
        for n, doc in docs:
            if has(doc, line_path) and kind == "integer" and line_path in needed_paths:
                value = lookup(doc, line_path)
                assert re.fullmatch(r"-?\d+", str(value)), (
                    f"{origin}:{n}: {'.'.join(line_path)} = {value!r} is not an integer"
                )


def _leaves(doc: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in doc.items():
        name = f"{prefix}{key}"
        out |= _leaves(value, name + ".") if isinstance(value, dict) else {name}
    return out


def check_postgresql(origin: str, text: str, branches, filebeat_inputs) -> None:
    bf = branches["postgresql"]
    start = re.compile(filebeat_inputs["postgresql"]["parsers"][0]["multiline"]["pattern"])
    events: list[list[str]] = []
    for line in text.splitlines():
        if start.search(line) or not events:
            events.append([line])
        else:
            events[-1].append(line)
    assert bf.grok_patterns, "the postgresql branch has no grok pattern"
    regexes = [to_regex(p) for p in bf.grok_patterns]
    for event in events:
        message = "\n".join(event)
        matched = [(rx.match(message), names) for rx, names in regexes if rx.match(message)]
        assert matched, f"{origin}: no grok pattern of the postgresql branch matches {event[0]!r}"
        m, names = matched[0]
        captured = {path(names[g]): v for g, v in m.groupdict().items() if v is not None}
        message_field = ("@metadata", "pg_message")
        if message_field in captured:
            assert captured[message_field].endswith(event[-1].split(":  ", 1)[-1]), (
                f"{origin}: the message of {event[0]!r} loses its continuation lines"
            )
        for p, formats in bf.dates:
            assert p in captured, f"{origin}: the date filter reads {p}, which grok does not set"
            assert parses_as_date(captured[p], formats), (
                f"{origin}: {captured[p]!r} matches none of {formats}"
            )
    assert unresolved_reads(bf, FILEBEAT_FIELDS) == []


@pytest.mark.parametrize(
    ("log_type", "origin", "text"), sample_sets(), ids=[f"{t}:{o}" for t, o, _ in sample_sets()]
)
def test_pipeline_fields_exist_in_sample_lines(log_type, origin, text, branches, filebeat_inputs):
    if log_type == "postgresql":
        check_postgresql(origin, text, branches, filebeat_inputs)
    else:
        check_json_lines(log_type, origin, text, branches)


def test_pipeline_fields_exist_in_lines_of_the_app_formatter(branches):
    """The app's formatter alone (standard library): every line has the time, level, message."""
    text = "\n".join(_run_app("--formatter-only"))
    check_json_lines("app", "app/kv/logjson.py (formatter only)", text, branches, partial=True)
    for line in text.splitlines():
        doc = expand(json.loads(line))
        for p in (("@timestamp",), ("log", "level"), ("message",)):
            assert has(doc, p), f"the app's formatter no longer writes {'.'.join(p)}"


def test_pipeline_fields_exist_in_lines_of_the_app_middleware(branches):
    """The app's access lines, written by its middleware through its formatter."""
    python = _app_python()
    if python is None:
        pytest.skip(
            "no Python with the app's requirements (app/.venv or $KV_APP_PYTHON): the app's "
            "middleware could not run; only the fixture and formatter lines were checked"
        )
    text = "\n".join(_run_app(python=python))
    check_json_lines("app", "app/kv/middleware.py", text, branches)
    docs = [expand(json.loads(line)) for line in text.splitlines()]
    access = [d for d in docs if has(d, ("http", "response", "status_code"))]
    assert access, "the middleware wrote no access line"
    for doc in access:
        assert has(doc, ("http", "request", "id")), "an access line without its request id"


def test_pipeline_fields_exist_in_lines_of_the_nginx_role(branches):
    """Access lines built from the nginx role's own log_format (roles/nginx)."""
    lines = nginx_log_lines.lines()
    if lines is None:
        pytest.skip(
            f"no log_format {nginx_log_lines.FORMAT_NAME} in {nginx_log_lines.TEMPLATE}: "
            "only the fixture nginx lines were checked"
        )
    check_json_lines("nginx", "roles/nginx log_format kv_json", "\n".join(lines), branches)


def test_fixture_nginx_lines_match_the_nginx_role():
    lines = nginx_log_lines.lines()
    if lines is None:
        pytest.skip("the nginx role has no kv_json log_format to compare the fixture with")
    fixture = (FIXTURES / "nginx.jsonl").read_text().splitlines()
    fresh_keys = [sorted(json.loads(x)) for x in lines]
    fixture_keys = [sorted(json.loads(x)) for x in fixture if x.strip()]
    assert fresh_keys == fixture_keys, (
        "tests/elk/fixtures/nginx.jsonl is out of date; regenerate it with "
        "`.venv/bin/python tests/elk/nginx_log_lines.py > tests/elk/fixtures/nginx.jsonl`"
    )


def test_fixture_app_lines_match_what_the_app_writes():
    """The committed app fixture has the same fields as what the app writes today."""
    python = _app_python()
    if python is None:
        pytest.skip("no Python with the app's requirements: cannot compare the fixture to the app")
    fresh = {frozenset(_leaves(expand(json.loads(x)))) for x in _run_app(python=python)}
    fixture_text = (FIXTURES / "app.jsonl").read_text()
    fixture = {frozenset(_leaves(expand(json.loads(x)))) for x in fixture_text.splitlines() if x}
    stale = [sorted(s) for s in fresh if s not in fixture]
    assert not stale, (
        "tests/elk/fixtures/app.jsonl is out of date; regenerate it with "
        "`PYTHONPATH=app app/.venv/bin/python -m tests.elk.app_log_lines "
        f"> tests/elk/fixtures/app.jsonl`: {stale}"
    )


def test_filebeat_log_types_have_a_pipeline_branch(branches, filebeat_inputs):
    assert set(filebeat_inputs) == set(branches)


def test_every_branch_keeps_the_request_id_and_sets_its_dataset(branches):
    for log_type, bf in branches.items():
        assert ("data_stream", "dataset") in bf.writes, f"{log_type} sets no data_stream.dataset"
        if log_type in ("app", "nginx"):
            reads = {r.path for r in bf.reads} | set(bf.writes)
            assert ("http", "request", "id") in reads, f"{log_type} drops the request id"


def _saved_search_fields(renders) -> dict[str, set[tuple[str, ...]]]:
    render = renders["lab-like"]
    host = render.hosts_with("logstash-kv.conf")[0]
    out = {}
    for search in render.api[host]["saved_searches"]:
        names = re.findall(r"([a-z_][a-z0-9_.]*)\s*(?::|>=|<=|>|<)", search["query"])
        assert names, search
        out[search["id"]] = {tuple(n.split(".")) for n in names + search["columns"]}
    return out


@functools.cache
def _app_sample_sources() -> list[tuple[str, str]]:
    out = [(o, t) for kind, o, t in sample_sets() if kind == "app"]
    python = _app_python()
    if python is not None:
        out.append(("app/kv/middleware.py", "\n".join(_run_app(python=python))))
    return out


@pytest.mark.parametrize(
    ("origin", "text"), _app_sample_sources(), ids=[o for o, _ in _app_sample_sources()]
)
def test_saved_searches_use_fields_the_app_writes(renders, origin, text):
    """The saved searches (query and columns) use fields the app's lines have: a renamed field
    would leave them empty."""
    docs = [expand(json.loads(x)) for x in text.splitlines() if x.strip()]
    for search_id, fields in _saved_search_fields(renders).items():
        absent = [".".join(p) for p in fields if not any(has(d, p) for d in docs)]
        assert not absent, f"{origin}: saved search {search_id} uses {absent}, which no line has"


def test_saved_searches_use_fields_the_nginx_branch_writes(renders, branches):
    written = set(branches["nginx"].writes)
    for search_id, fields in _saved_search_fields(renders).items():
        absent = [
            ".".join(p) for p in fields - {("log", "level"), ("message",)} if p not in written
        ]
        assert not absent, f"the nginx branch does not set {absent}, used by {search_id}"
