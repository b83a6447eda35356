"""testinfra checks of node_exporter on every host of the scenario."""

testinfra_hosts = ["all"]


def address(host):
    """The host's internal address: the first of `hostname -I` (the scenario's network)."""
    return host.check_output("hostname -I").split()[0]


def test_node_exporter_running_enabled_on_internal_address(host):
    svc = host.service("prometheus-node-exporter")
    assert svc.is_running and svc.is_enabled
    assert host.socket(f"tcp://{address(host)}:9100").is_listening
    metrics = host.check_output(
        'python3 -c "import urllib.request; print(urllib.request.urlopen('
        f"'http://{address(host)}:9100/metrics', timeout=5).read().decode())\""
    )
    # the container's root file system (overlay) is kept by the filesystem collector
    assert (
        'node_filesystem_avail_bytes{device="overlay",fstype="overlay",mountpoint="/"}' in metrics
    )


def test_no_failed_units(host):
    failed = host.run("systemctl --failed --no-legend --plain").stdout.strip()
    assert failed == "", f"failed units: {failed}"
