"""The pipeline checker rejects what Logstash would reject: a green check means something."""

from __future__ import annotations

import pytest

from .logstash_config import ConfigError, branches_by_value, parse, unresolved_reads

GOOD = """
input { beats { port => 5044 } }
filter {
  if [fields][log_type] == "app" {
    json { source => "message" target => "[@metadata][line]" }
    date { match => ["[@metadata][line][time]", "ISO8601"] }
    mutate { copy => { "[@metadata][line][rid]" => "[http][request][id]" } }
    mutate { convert => { "[http][request][id]" => "string" } }
  }
}
output { elasticsearch { hosts => ["https://a:9200"] } }
"""


def test_a_good_config_parses():
    cfg = parse(GOOD)
    assert [p.name for p in cfg.sections["input"]] == ["beats"]
    bf = branches_by_value(cfg, "[fields][log_type]")["app"]
    reads = {p for _, p in unresolved_reads(bf, {("message",)})}
    assert reads == {("time",), ("rid",)}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (GOOD.replace("output {", "output {{"), "expected a name"),
        (GOOD + "filter { mutate { }", "unbalanced braces"),
        (GOOD.replace("json {", "jsonn {"), "unknown filter plugin 'jsonn'"),
        (GOOD.replace("port =>", "prot =>"), "unknown option 'prot'"),
        (GOOD + 'filter { mutate { add_tag => ["x } }', "unterminated string"),
        (GOOD.replace("input {", "inptu {"), "unknown section 'inptu'"),
    ],
    ids=["stray-brace", "unbalanced", "unknown-plugin", "unknown-option", "open-string", "section"],
)
def test_bad_configs_are_rejected(text, error):
    with pytest.raises(ConfigError, match=error):
        parse(text)
