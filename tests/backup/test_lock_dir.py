"""pgBackRest's lock directory is on /run: systemd-tmpfiles makes it again at every boot and the
role makes it on every run. Both must agree on its mode and owner, or the first converge after a
reboot changes it (and check mode reports that change)."""

from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "pgbackrest"


def test_tmpfiles_and_the_role_make_the_lock_directory_alike():
    template = (ROLE / "templates" / "pgbackrest.tmpfiles.j2").read_text()
    line = next(x for x in template.splitlines() if x.startswith("d {{ pgbackrest_lock_path }}"))
    fields = line.replace("{{ ", "{{").replace(" }}", "}}").split()
    kind, _path, mode, user, group = fields[:5]
    tasks = yaml.safe_load((ROLE / "tasks" / "install.yml").read_text())
    task = next(t for t in tasks if "pgbackrest_lock_path" in str(t.get("loop", "")))
    module = task["ansible.builtin.file"]
    assert kind == "d"
    assert (mode, user, group) == (module["mode"], "{{__pgbackrest_user}}", "{{__pgbackrest_user}}")
    assert (module["owner"], module["group"]) == ("{{ __pgbackrest_user }}",) * 2
