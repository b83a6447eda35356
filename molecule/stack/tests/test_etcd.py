"""testinfra on the etcd members (group dcs) after site.yml: a healthy cluster of every member
with one leader, TLS with client certificates from the internal CA on the client and peer ports
(no certificate or plain HTTP gets nothing), a metrics listener for Prometheus, and the files'
owners and modes.

Outside Molecule, against the lab (read-only but for one key it writes and deletes):
    .venv/bin/pytest --hosts='ansible://dcs' --ansible-inventory=inventory/lab/hosts.yml \
        molecule/stack/tests/test_etcd.py
"""

import json
import shlex
import uuid

import pytest

testinfra_hosts = ["dcs"]

PKI = "/etc/etcd/pki"
TLS = f"--cacert {PKI}/ca.crt --cert {PKI}/client.crt --key {PKI}/client.key"
CLIENT_PORT, PEER_PORT, METRICS_PORT = 2379, 2380, 2381


def _vars(host):
    return host.ansible.get_variables()


def _address(host):
    return _vars(host)["internal_address"]


def _members(host):
    """inventory name -> internal address of every member of group dcs."""
    runner = host.backend.ansible_runner
    return {
        name: runner.get_variables(name)["internal_address"]
        for name in _vars(host)["groups"]["dcs"]
    }


@pytest.fixture(scope="module")
def members(host):
    return _members(host)


def etcdctl(host, args, endpoints, tls=TLS):
    timeouts = "--dial-timeout=3s --command-timeout=5s"
    return host.run(f"ETCDCTL_API=3 etcdctl {timeouts} --endpoints={endpoints} {tls} {args}")


def test_etcd_runs_as_etcd_enabled_and_sandboxed(host):
    service = host.service("etcd")
    assert service.is_running and service.is_enabled
    show = host.run(
        "systemctl show etcd -p User -p ProtectSystem -p NoNewPrivileges -p CapabilityBoundingSet"
        " -p Restart -p NRestarts"
    ).stdout
    props = dict(line.split("=", 1) for line in show.splitlines())
    assert props["User"] == "etcd"
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert props["CapabilityBoundingSet"] == ""
    assert props["Restart"] == "on-failure"
    assert props["NRestarts"] == "0", "etcd crashed and was restarted by systemd"


@pytest.mark.parametrize(
    "path, owner, group, mode",
    [
        ("/etc/etcd", "root", "etcd", 0o750),
        (PKI, "root", "etcd", 0o750),
        (f"{PKI}/ca.crt", "root", "etcd", 0o644),
        (f"{PKI}/server.crt", "root", "etcd", 0o644),
        (f"{PKI}/server.key", "root", "etcd", 0o640),
        (f"{PKI}/client.crt", "root", "etcd", 0o644),
        (f"{PKI}/client.key", "root", "etcd", 0o600),
        ("/etc/default/etcd", "root", "etcd", 0o640),
        ("/etc/etcd/etcdctl.env", "root", "root", 0o600),
        ("/var/lib/etcd", "etcd", "etcd", 0o700),
    ],
)
def test_files_owners_and_modes(host, path, owner, group, mode):
    f = host.file(path)
    assert f.exists, path
    assert (f.user, f.group, f.mode) == (owner, group, mode)


def test_server_certificate_is_from_the_ca_and_names_the_host(host):
    verify = host.run(f"openssl verify -CAfile {PKI}/ca.crt {PKI}/server.crt {PKI}/client.crt")
    assert verify.rc == 0, verify.stdout + verify.stderr
    sans = host.check_output(f"openssl x509 -in {PKI}/server.crt -noout -ext subjectAltName")
    assert f"IP Address:{_address(host)}" in sans
    assert f"DNS:{host.ansible.get_variables()['inventory_hostname']}" in sans


def test_listens_on_the_internal_address_only(host):
    address = _address(host)
    for port in (CLIENT_PORT, PEER_PORT, METRICS_PORT):
        assert host.socket(f"tcp://{address}:{port}").is_listening, port
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, port


def test_every_member_is_healthy_and_listed(host, members):
    endpoints = ",".join(f"https://{a}:{CLIENT_PORT}" for a in members.values())
    health = etcdctl(host, "endpoint health --cluster", endpoints)
    assert health.rc == 0, health.stdout + health.stderr
    healthy = [
        line for line in (health.stdout + health.stderr).splitlines() if "is healthy" in line
    ]
    assert len(healthy) == len(members), health.stdout + health.stderr

    listed = json.loads(etcdctl(host, "member list -w json", endpoints).stdout)["members"]
    assert {m["name"]: m["peerURLs"] for m in listed} == {
        name: [f"https://{a}:{PEER_PORT}"] for name, a in members.items()
    }
    assert all(not m.get("isLearner", False) for m in listed)


def test_one_leader_that_every_member_agrees_on(host, members):
    endpoints = ",".join(f"https://{a}:{CLIENT_PORT}" for a in members.values())
    run = etcdctl(host, "endpoint status -w json", endpoints)
    assert run.rc == 0, run.stdout + run.stderr
    statuses = json.loads(run.stdout)
    assert len(statuses) == len(members)
    leaders = {s["Status"]["leader"] for s in statuses}
    ids = {s["Status"]["header"]["member_id"] for s in statuses}
    assert len(leaders) == 1 and leaders <= ids, statuses


def test_put_and_get_through_different_members(host, members):
    """A value written through this host's endpoint is read back through another member's."""
    mine = _address(host)
    other = next(a for a in members.values() if a != mine) if len(members) > 1 else mine
    key = f"/kv-testinfra/{uuid.uuid4().hex}"
    value = uuid.uuid4().hex
    put = etcdctl(host, f"put {key} {value}", f"https://{mine}:{CLIENT_PORT}")
    try:
        assert put.rc == 0 and put.stdout.strip() == "OK", put.stdout + put.stderr
        got = etcdctl(host, f"get {key} --print-value-only", f"https://{other}:{CLIENT_PORT}")
        assert got.rc == 0 and got.stdout.strip() == value, got.stdout + got.stderr
    finally:
        etcdctl(host, f"del {key}", f"https://{mine}:{CLIENT_PORT}")


def test_a_client_without_a_certificate_is_refused(host):
    url = f"https://{_address(host)}:{CLIENT_PORT}/version"
    with_cert = host.run(f"curl -sS -m 5 {TLS} {shlex.quote(url)}")
    assert with_cert.rc == 0 and '"etcdserver":"3.' in with_cert.stdout, with_cert.stderr
    without = host.run(f"curl -sS -m 5 --cacert {PKI}/ca.crt {shlex.quote(url)}")
    assert without.rc != 0 and "etcdserver" not in without.stdout, without.stdout
    ctl = etcdctl(
        host, "get /", f"https://{_address(host)}:{CLIENT_PORT}", tls=f"--cacert {PKI}/ca.crt"
    )
    assert ctl.rc != 0, ctl.stdout


def test_a_peer_without_a_certificate_is_refused(host):
    # The peer API answers HTTP/1.1 (curl would try HTTP/2 first).
    url = f"https://{_address(host)}:{PEER_PORT}/members"
    without = host.run(f"curl -sS -m 5 --http1.1 --cacert {PKI}/ca.crt {shlex.quote(url)}")
    assert without.rc != 0 and "peerURLs" not in without.stdout, without.stdout
    with_cert = host.run(f"curl -sS -m 5 --http1.1 {TLS} {shlex.quote(url)}")
    assert with_cert.rc == 0 and "peerURLs" in with_cert.stdout, with_cert.stderr


@pytest.mark.parametrize("port", [CLIENT_PORT, PEER_PORT])
def test_plain_http_gets_nothing(host, port):
    run = host.run(f"curl -sS -m 5 http://{_address(host)}:{port}/version")
    assert run.rc != 0 and "etcdserver" not in run.stdout, run.stdout


def test_metrics_listener_serves_metrics_only_over_http(host):
    address = _address(host)
    metrics = host.check_output(f"curl -sS -m 5 http://{address}:{METRICS_PORT}/metrics")
    assert "etcd_server_has_leader 1" in metrics.splitlines()
    keys = host.run(
        f'curl -sS -m 5 http://{address}:{METRICS_PORT}/v3/kv/range -d \'{{"key":"Lw=="}}\''
    )
    assert '"kvs"' not in keys.stdout and '"header"' not in keys.stdout, keys.stdout
