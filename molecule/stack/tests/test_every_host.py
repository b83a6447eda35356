"""testinfra on every host of the lab after site.yml: the base every role relies on."""

testinfra_hosts = ["all"]


def test_systemd_running_without_failed_units(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    failed = host.run("systemctl --failed --no-legend --plain").stdout.strip()
    assert state == "running", f"{state}; failed units: {failed}"


def test_internal_address_is_on_the_host(host):
    address = host.ansible.get_variables()["internal_address"]
    assert address in host.interface("eth0").addresses


def test_time_zone_and_journal_bound(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Etc/UTC"
    journald = host.file("/etc/systemd/journald.conf.d/50-common.conf")
    assert "SystemMaxUse=" in journald.content_string
