"""The docs stand on their own (docs/conventions.md): nothing in the repository cites design
files outside it, relative links in the Markdown docs resolve, and the inventory files that the
roles' messages tell an operator to edit exist."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Built from pieces so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared/", "shared/" + "design", r"\bstyle" + r"\.md\b"]))


def _tracked_and_new_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def test_nothing_cites_design_files_outside_the_repository():
    found = []
    for path in _tracked_and_new_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == [], "cite the repository's own docs (docs/) instead:\n" + "\n".join(found)


MARKDOWN = sorted([ROOT / "README.md", ROOT / "app" / "README.md",
                   *(ROOT / "docs").glob("*.md"), *(ROOT / "roles").glob("*/README.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(target)
            continue
        if anchor and dest.suffix == ".md":
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)}
            if anchor not in slugs:
                broken.append(target)
    assert broken == [], f"{doc.relative_to(ROOT)}: links to nothing: {broken}"


INVENTORY_FILE = re.compile(r"group_vars/[\w./-]+?\.yml\b")


def test_role_messages_name_inventory_files_that_exist():
    inventories = [p for p in (ROOT / "inventory").iterdir() if p.is_dir()]
    missing = []
    for tasks in sorted((ROOT / "roles").glob("*/tasks/*.yml")):
        for name in sorted(set(INVENTORY_FILE.findall(tasks.read_text()))):
            if not any((inv / name).exists() for inv in inventories):
                missing.append(f"{tasks.relative_to(ROOT)}: {name}")
    assert missing == [], (
        "these files are in no inventory under inventory/:\n" + "\n".join(missing))
