"""Just enough of grok to run the pipeline's patterns in Python against sample lines."""

from __future__ import annotations

import re

# Logstash's patterns (logstash-patterns-core, legacy set), in Python syntax.
PATTERNS = {
    "TIMESTAMP_ISO8601": (
        r"\d{4}-\d{2}-\d{2}[T ]\d{2}:?\d{2}(?::?\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    ),
    "WORD": r"\b\w+\b",
    "NOTSPACE": r"\S+",
    "POSINT": r"\b[1-9][0-9]*\b",
    "INT": r"[+-]?[0-9]+",
    "NUMBER": r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)",
    "DATA": r".*?",
    "GREEDYDATA": r".*",
    "IP": r"[0-9A-Fa-f:.]+",
}


def to_regex(pattern: str) -> tuple[re.Pattern, dict[str, str]]:
    """Compile a grok pattern; returns the regex and {group name: Logstash field}."""
    names: dict[str, str] = {}

    def capture(field: str) -> str:
        name = f"g{len(names)}"
        names[name] = field
        return name

    def expand(m: re.Match) -> str:
        kind, field = m.group(1), m.group(2)
        if kind not in PATTERNS:
            raise KeyError(f"grok pattern {kind} is not known to tests/elk/grok.py: add it")
        body = PATTERNS[kind]
        return f"(?P<{capture(field)}>{body})" if field else f"(?:{body})"

    out = re.sub(r"%\{(\w+)(?::([^:}]+))?(?::\w+)?\}", expand, pattern)
    out = re.sub(r"\(\?<([^>]+)>", lambda m: f"(?P<{capture(m.group(1))}>", out)
    return re.compile(out), names
