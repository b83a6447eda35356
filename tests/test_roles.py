"""Repository-wide checks of the roles' shape (docs/conventions.md): specs match defaults,
templates say they are managed, variables carry their role's prefix, task files are split by
phase."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def _load(path: Path):
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_declare_every_default(role):
    defaults = role / "defaults" / "main.yml"
    specs = role / "meta" / "argument_specs.yml"
    assert specs.is_file(), f"{role.name}: meta/argument_specs.yml is missing"
    default_keys = set(_load(defaults)) if defaults.is_file() else set()
    spec_keys = set(_load(specs)["argument_specs"]["main"].get("options", {}))
    assert default_keys - spec_keys == set(), f"{role.name}: defaults without a spec"
    assert spec_keys - default_keys == set(), f"{role.name}: specs without a default"


@pytest.mark.parametrize(
    "role", [r for r in ROLES if (r / "defaults" / "main.yml").is_file()], ids=lambda p: p.name
)
def test_defaults_are_prefixed_with_the_role_name(role):
    defaults = role / "defaults" / "main.yml"
    bad = [k for k in _load(defaults) if not k.startswith(role.name + "_")]
    assert bad == [], f"{role.name}: variables without the '{role.name}_' prefix: {bad}"


# JSON has no comments, so JSON templates are exempt.
@pytest.mark.parametrize(
    "template",
    sorted(
        p for p in (ROOT / "roles").glob("*/templates/**/*.j2") if not p.stem.endswith(".json")
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_templates_start_with_ansible_managed(template):
    text = template.read_text()
    head = "\n".join(text.splitlines()[:3])
    assert "ansible_managed" in head, f"{template} does not start with {{{{ ansible_managed }}}}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_main_only_includes_phases(role):
    main = _load(role / "tasks" / "main.yml")
    for task in main:
        keys = set(task) - {"name", "tags", "when", "vars"}
        assert keys <= {"ansible.builtin.import_tasks", "ansible.builtin.include_tasks"}, (
            f"{role.name}: tasks/main.yml should only include phase files, found {sorted(keys)}"
        )


def _entry_points_used() -> list[tuple[str, str, str]]:
    """(file, role, entry point) of every include_role/import_role with tasks_from in the
    playbooks that operators run (site.yml, playbooks/, bench/)."""
    used = []
    files = [ROOT / "site.yml", *sorted((ROOT / "playbooks").glob("*.yml")),
             *sorted((ROOT / "bench").glob("*.yml"))]

    def walk(node, path):
        if isinstance(node, dict):
            for key in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
                spec = node.get(key)
                if isinstance(spec, dict) and "tasks_from" in spec:
                    entry = str(spec["tasks_from"]).removesuffix(".yml").removesuffix(".yaml")
                    used.append((path.name, spec["name"], entry))
            for value in node.values():
                walk(value, path)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    for path in files:
        walk(_load(path), path)
    return used


def test_every_entry_point_the_playbooks_use_is_declared():
    """A role's tasks_from entry point is part of its interface: meta/argument_specs.yml
    declares it (and Ansible validates its inputs at the include)."""
    used = _entry_points_used()
    assert used, "no tasks_from found: the walk is broken"
    missing = sorted({(role, entry, name) for name, role, entry in used
                      if entry not in _load(ROOT / "roles" / role / "meta" / "argument_specs.yml")
                      ["argument_specs"]})
    assert missing == [], f"entry points without a spec (role, entry, playbook): {missing}"

