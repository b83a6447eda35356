"""A small parser for Logstash pipeline configuration, and what a pipeline branch reads.

Follows Logstash's grammar (logstash-core/lib/logstash/config/grammar.treetop) closely enough to
reject unbalanced braces, unterminated strings and unknown plugins, and to find every field a
branch reads, so that tests can check those fields against real log lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Plugins bundled with Logstash's default distribution that a KV pipeline may use.
KNOWN_PLUGINS = {
    "input": {
        "beats",
        "elastic_agent",
        "stdin",
        "file",
        "generator",
        "http",
        "tcp",
        "udp",
        "syslog",
        "pipeline",
        "heartbeat",
        "dead_letter_queue",
        "elasticsearch",
        "kafka",
        "redis",
        "s3",
    },
    "filter": {
        "json",
        "date",
        "mutate",
        "ruby",
        "grok",
        "dissect",
        "kv",
        "geoip",
        "useragent",
        "fingerprint",
        "drop",
        "clone",
        "translate",
        "split",
        "urldecode",
        "truncate",
        "prune",
        "cidr",
        "dns",
        "csv",
        "xml",
        "uuid",
        "aggregate",
        "de_dot",
        "throttle",
        "syslog_pri",
        "metrics",
        "elasticsearch",
        "http",
        "memcached",
        "sleep",
    },
    "output": {
        "elasticsearch",
        "stdout",
        "file",
        "pipeline",
        "http",
        "tcp",
        "udp",
        "kafka",
        "redis",
        "s3",
        "null",
        "sink",
        "lumberjack",
        "email",
        "csv",
    },
}

_COMMON = {
    "input": {"id", "codec", "tags", "type", "add_field", "enable_metric", "ecs_compatibility"},
    "filter": {
        "id",
        "add_field",
        "add_tag",
        "remove_field",
        "remove_tag",
        "enable_metric",
        "periodic_flush",
        "ecs_compatibility",
    },
    "output": {"id", "codec", "enable_metric", "workers", "ecs_compatibility"},
}

# Options of the plugins this project uses (from each plugin's documentation); an option not listed
# here is a typo or an option of another version, which Logstash rejects at start.
KNOWN_OPTIONS = {
    ("input", "beats"): {
        "host",
        "port",
        "ssl_enabled",
        "ssl_certificate",
        "ssl_key",
        "ssl_key_passphrase",
        "ssl_certificate_authorities",
        "ssl_client_authentication",
        "ssl_supported_protocols",
        "ssl_cipher_suites",
        "ssl_handshake_timeout",
        "client_inactivity_timeout",
        "include_codec_tag",
        "executor_threads",
        "add_hostname",
        "event_loop_threads",
    },
    ("filter", "json"): {"source", "target", "skip_on_invalid_json", "tag_on_failure"},
    ("filter", "ruby"): {"code", "init", "path", "script_params", "tag_on_exception"},
    ("filter", "date"): {"match", "target", "timezone", "locale", "tag_on_failure"},
    ("filter", "mutate"): {
        "convert",
        "copy",
        "gsub",
        "join",
        "lowercase",
        "merge",
        "coerce",
        "rename",
        "replace",
        "split",
        "strip",
        "update",
        "uppercase",
        "capitalize",
        "tag_on_failure",
    },
    ("filter", "grok"): {
        "match",
        "pattern_definitions",
        "patterns_dir",
        "patterns_files_glob",
        "break_on_match",
        "keep_empty_captures",
        "named_captures_only",
        "overwrite",
        "tag_on_failure",
        "tag_on_timeout",
        "timeout_millis",
        "target",
    },
    ("output", "elasticsearch"): {
        "hosts",
        "data_stream",
        "data_stream_type",
        "data_stream_dataset",
        "data_stream_namespace",
        "data_stream_auto_routing",
        "data_stream_sync_fields",
        "user",
        "password",
        "api_key",
        "ssl_enabled",
        "ssl_certificate_authorities",
        "ssl_verification_mode",
        "ssl_certificate",
        "ssl_key",
        "index",
        "pipeline",
        "action",
        "ilm_enabled",
        "manage_template",
        "retry_max_interval",
        "timeout",
    },
}


class ConfigError(ValueError):
    pass


@dataclass
class Plugin:
    section: str
    name: str
    attrs: list[tuple[str, object]]
    line: int

    def get(self, key, default=None):
        for k, v in self.attrs:
            if k == key:
                return v
        return default


@dataclass
class Branch:
    clauses: list[tuple[str | None, list]]  # (condition text or None for else, body)
    line: int


@dataclass
class Config:
    sections: dict[str, list] = field(default_factory=dict)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    # -- lexical helpers
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def error(self, msg: str):
        raise ConfigError(f"line {self.line()}: {msg}")

    def skip(self):
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c.isspace():
                self.pos += 1
            elif c == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                break

    def peek(self, s: str) -> bool:
        self.skip()
        return self.text.startswith(s, self.pos)

    def expect(self, s: str):
        if not self.peek(s):
            found = self.text[self.pos : self.pos + 20] or "end of file"
            self.error(f"expected {s!r}, found {found!r}")
        self.pos += len(s)

    def at_end(self) -> bool:
        self.skip()
        return self.pos >= len(self.text)

    def string(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        out = []
        while True:
            if self.pos >= len(self.text):
                self.pos = start
                self.error("unterminated string")
            c = self.text[self.pos]
            if c == "\\" and self.text[self.pos + 1 : self.pos + 2] == quote:
                out.append(quote)
                self.pos += 2
            elif c == quote:
                self.pos += 1
                return "".join(out)
            else:
                out.append(c)
                self.pos += 1

    def bareword(self) -> str:
        self.skip()
        m = re.compile(r"[A-Za-z0-9_@.\-]+").match(self.text, self.pos)
        if not m:
            self.error(f"expected a name, found {self.text[self.pos : self.pos + 20]!r}")
        self.pos = m.end()
        return m.group(0)

    # -- grammar
    def config(self) -> Config:
        cfg = Config()
        while not self.at_end():
            name = self.bareword()
            if name not in KNOWN_PLUGINS:
                self.error(f"unknown section {name!r} (input, filter or output)")
            self.expect("{")
            cfg.sections.setdefault(name, []).extend(self.block(name))
        return cfg

    def block(self, section: str) -> list:
        items = []
        while not self.peek("}"):
            if self.at_end():
                self.error("unbalanced braces: end of file inside a block")
            items.append(self.branch_or_plugin(section))
        self.expect("}")
        return items

    def branch_or_plugin(self, section: str):
        self.skip()
        line = self.line()
        if re.compile(r"if\b").match(self.text, self.pos):
            self.pos += 2
            clauses = [(self.condition(), self.braced_block(section))]
            while True:
                self.skip()
                m = re.compile(r"else\s+if\b").match(self.text, self.pos)
                if m:
                    self.pos = m.end()
                    clauses.append((self.condition(), self.braced_block(section)))
                    continue
                if re.compile(r"else\b").match(self.text, self.pos):
                    self.pos += 4
                    clauses.append((None, self.braced_block(section)))
                break
            return Branch(clauses, line)
        name = self.bareword()
        if name not in KNOWN_PLUGINS[section]:
            self.error(f"unknown {section} plugin {name!r}")
        self.expect("{")
        attrs = []
        while not self.peek("}"):
            if self.at_end():
                self.error(f"unbalanced braces in {section} plugin {name!r}")
            key = self.name()
            self.expect("=>")
            attrs.append((key, self.value()))
        self.expect("}")
        allowed = KNOWN_OPTIONS.get((section, name))
        if allowed is not None:
            for key, _ in attrs:
                if key not in allowed | _COMMON[section]:
                    self.error(f"unknown option {key!r} of {section} plugin {name!r}")
        return Plugin(section, name, attrs, line)

    def braced_block(self, section: str) -> list:
        self.expect("{")
        return self.block(section)

    def condition(self) -> str:
        self.skip()
        start = self.pos
        depth = 0
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in "\"'":
                self.string()
                continue
            if c in "[(":
                depth += 1
            elif c in "])":
                depth -= 1
            elif c == "{" and depth == 0:
                return self.text[start : self.pos].strip()
            self.pos += 1
        self.error("condition without a block")

    def name(self) -> str:
        self.skip()
        if self.text[self.pos : self.pos + 1] in ("'", '"'):
            return self.string()
        return self.bareword()

    def value(self):
        self.skip()
        c = self.text[self.pos : self.pos + 1]
        if c in ("'", '"'):
            return self.string()
        if c == "[":
            self.pos += 1
            out = []
            while not self.peek("]"):
                if self.at_end():
                    self.error("unterminated array")
                out.append(self.value())
                if self.peek(","):
                    self.pos += 1
            self.expect("]")
            return out
        if c == "{":
            self.pos += 1
            out = {}
            while not self.peek("}"):
                if self.at_end():
                    self.error("unterminated hash")
                key = self.name()
                self.expect("=>")
                out[key] = self.value()
                if self.peek(","):
                    self.pos += 1
            self.expect("}")
            return out
        return self.bareword()


def parse(text: str) -> Config:
    return _Parser(text).config()


# ----------------------------------------------------------------------------- field analysis

FIELD_REF = re.compile(r"(?:\[[^\[\]\"',]+\])+")
SPRINTF = re.compile(r"%\{(\[[^}]+\]|[A-Za-z0-9_@.]+)\}")
RUBY_GET = re.compile(r"event\.get\(\s*[\"'](\[[^\"']+\]|[^\"'\[\]]+)[\"']\s*\)")
RUBY_SET = re.compile(r"event\.set\(\s*[\"'](\[[^\"']+\]|[^\"'\[\]]+)[\"']\s*,")
GROK_CAPTURE = re.compile(r"%\{\w+:([^:}]+)(?::\w+)?\}|\(\?<([^>]+)>")


def path(ref: str) -> tuple[str, ...]:
    """'[a][b]' or 'a' -> ('a', 'b'); Logstash treats a bare name as one top-level field."""
    ref = ref.strip()
    if ref.startswith("["):
        return tuple(re.findall(r"\[([^\]]+)\]", ref))
    return (ref,)


@dataclass
class Read:
    path: tuple[str, ...]
    where: str


@dataclass
class BranchFields:
    """What one branch of the filter section reads and writes, in order."""

    reads: list[Read] = field(default_factory=list)
    writes: list[tuple[str, ...]] = field(default_factory=list)
    json_targets: list[tuple[str, ...]] = field(default_factory=list)
    merged_targets: list[tuple[str, ...]] = field(default_factory=list)
    grok_patterns: list[str] = field(default_factory=list)
    converts: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    dates: list[tuple[tuple[str, ...], list[str]]] = field(default_factory=list)

    def read(self, ref: str, where: str):
        self.reads.append(Read(path(ref), where))

    def write(self, ref: str):
        self.writes.append(path(ref))


def _sprintf_reads(value, bf: BranchFields, where: str):
    if isinstance(value, str):
        for ref in SPRINTF.findall(value):
            bf.read(ref, where + " (sprintf)")
    elif isinstance(value, list):
        for v in value:
            _sprintf_reads(v, bf, where)
    elif isinstance(value, dict):
        for v in value.values():
            _sprintf_reads(v, bf, where)


def _plugin_fields(p: Plugin, bf: BranchFields):
    where = f"{p.name} (line {p.line})"
    if p.name == "json":
        bf.read(p.get("source", "message"), where)
        target = p.get("target")
        if target:
            bf.json_targets.append(path(target))
    elif p.name == "date":
        match = p.get("match") or []
        if match:
            bf.read(match[0], where)
            bf.dates.append((path(match[0]), list(match[1:])))
        bf.write(p.get("target", "@timestamp"))
        _sprintf_reads(p.get("timezone"), bf, where)
    elif p.name == "grok":
        for src, patterns in (p.get("match") or {}).items():
            bf.read(src, where)
            for pattern in patterns if isinstance(patterns, list) else [patterns]:
                bf.grok_patterns.append(pattern)
                for a, b in GROK_CAPTURE.findall(pattern):
                    bf.write(a or b)
    elif p.name == "ruby":
        code = p.get("code", "")
        for ref in RUBY_GET.findall(code):
            bf.read(ref, where)
            # Code that reads a whole JSON target and sets fields with computed names copies
            # the line's fields to the root of the event.
            if path(ref) in bf.json_targets and re.search(r"event\.set\(\s*[a-z_]", code):
                bf.merged_targets.append(path(ref))
        for ref in RUBY_SET.findall(code):
            bf.write(ref)
    elif p.name == "mutate":
        # Logstash applies mutate's operations in this fixed order.
        for src, dst in (p.get("rename") or {}).items():
            bf.read(src, where + " rename")
            bf.write(dst)
        for key in ("update", "replace"):
            for dst, val in (p.get(key) or {}).items():
                _sprintf_reads(val, bf, f"{where} {key}")
                bf.write(dst)
        for src in p.get("convert") or {}:
            bf.read(src, where + " convert")
        gsub = p.get("gsub") or []
        for src in gsub[0::3]:
            bf.read(src, where + " gsub")
        for key in ("uppercase", "lowercase", "capitalize", "strip"):
            for src in p.get(key) or []:
                bf.read(src, f"{where} {key}")
        for src, dst in (p.get("copy") or {}).items():
            bf.read(src, where + " copy")
            bf.write(dst)
    else:
        for _, val in p.attrs:
            _sprintf_reads(val, bf, where)
    for dst, val in (p.get("add_field") or {}).items():
        _sprintf_reads(val, bf, where + " add_field")
        bf.write(dst)


def _condition_reads(cond: str, bf: BranchFields, where: str):
    without_strings = re.sub(r"\"[^\"]*\"|'[^']*'", "", cond)
    for ref in FIELD_REF.findall(without_strings):
        bf.read(ref, where)


def _walk(items: list, bf: BranchFields):
    for item in items:
        if isinstance(item, Plugin):
            _plugin_fields(item, bf)
        else:
            for cond, body in item.clauses:
                if cond is not None:
                    _condition_reads(cond, bf, f"condition {cond!r} (line {item.line})")
                _walk(body, bf)


def branches_by_value(cfg: Config, selector: str) -> dict[str, BranchFields]:
    """Fields of each branch `if [selector] == "VALUE"` at the top of the filter section."""
    out: dict[str, BranchFields] = {}
    pattern = re.compile(r"^" + re.escape(selector) + r"\s*==\s*[\"']([^\"']+)[\"']$")
    for item in cfg.sections.get("filter", []):
        if not isinstance(item, Branch):
            continue
        for cond, body in item.clauses:
            m = pattern.match(cond or "")
            if m:
                bf = BranchFields()
                _walk(body, bf)
                out[m.group(1)] = bf
    return out


def unresolved_reads(bf: BranchFields, provided: set[tuple[str, ...]]) -> list[tuple[Read, tuple]]:
    """Reads that must come from the log line: [(read, path inside the line)].

    A read is satisfied by a field written earlier in the branch (or a parent/child of it), or by
    a field Filebeat provides (`provided`). A read under a JSON target is a field of the line; so is
    any other read once the branch has copied a JSON target to the root of the event.
    """
    out = []
    # A field written anywhere in the branch counts as written (the branches here write before
    # they read); the sources of those writes are reads themselves and are checked.
    writes_so_far = list(bf.writes)
    for r in bf.reads:
        p = r.path
        target = next((t for t in bf.json_targets if p[: len(t)] == t), None)
        if target is not None:
            if len(p) > len(target):
                out.append((r, p[len(target) :]))
            continue
        if any(w[: len(p)] == p or p[: len(w)] == w for w in writes_so_far):
            continue
        if p in provided:
            continue
        if bf.merged_targets:
            out.append((r, p))
        else:
            out.append((r, None))
    return out


_JODA = [
    ("yyyy", "%Y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
    ("SSS", "%f"),
    ("Z", "%z"),
]


def parses_as_date(value: str, formats: list[str]) -> bool:
    """Whether one of a date filter's formats (ISO8601, UNIX, UNIX_MS or a Joda pattern made of
    the usual letters) reads value."""
    from datetime import datetime

    for fmt in formats:
        try:
            if fmt == "ISO8601":
                datetime.fromisoformat(value.replace("Z", "+00:00").replace(",", "."))
            elif fmt in ("UNIX", "UNIX_MS"):
                float(value)
            else:
                py = fmt
                for joda, c in _JODA:
                    py = py.replace(joda, c)
                datetime.strptime(value, py)
            return True
        except ValueError:
            continue
    return False
