"""testinfra checks of the common role on every host of the scenario."""

import pytest

testinfra_hosts = ["all"]


def test_systemd_is_pid_1_and_running(host):
    assert host.run("cat /proc/1/comm").stdout.strip() == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), state
    failed = host.run("systemctl --failed --no-legend --plain").stdout.strip()
    assert failed == "", f"failed units: {failed}"


@pytest.mark.parametrize("name", ["acl", "ca-certificates", "curl", "logrotate"])
def test_base_packages(host, name):
    assert host.package(name).is_installed


def test_time_zone(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/Paris"
    assert host.file("/etc/timezone").content_string == "Europe/Paris\n"
    assert host.run("date +%Z").stdout.strip() in ("CET", "CEST")


def test_journal_bound(host):
    conf = host.file("/etc/systemd/journald.conf.d/50-common.conf")
    assert conf.mode == 0o644
    assert "SystemMaxUse=256M" in conf.content_string
    assert host.service("systemd-journald").is_running
