"""The userspace relay calibration (kproxy_emu.lab.relay) against the real kernel: small
transfers, the figures positive, the relay really relaying (the endpoint sees a node
address: the userspace mode's source-IP loss)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.conftest import skip_or_fail

pytestmark = [
    pytest.mark.lab,
    pytest.mark.usefixtures("no_leftovers"),
]


@pytest.fixture(autouse=True)
def lab_available():
    from kproxy_emu.lab.env import LabUnavailable, check

    try:
        check(None)
    except LabUnavailable as exc:
        skip_or_fail(str(exc))


def test_relay_figures_positive_and_source_is_the_node():
    from kproxy_emu.lab import relay

    cal = relay.measure(samples=20, bulk_bytes=16 << 20, bulk_repeats=5, seed=1, warmup=3)
    assert cal.ns_per_connection > 0
    assert cal.ns_per_byte > 0
    assert cal.relay_connect_ns > cal.direct_connect_ns > 0
    assert cal.relay_ns_per_byte > 0 and cal.direct_ns_per_byte > 0
    # the endpoint sees the node's address, never the client's
    assert cal.server_saw in (relay.NODE_IP, relay.GATEWAY)
    assert cal.server_saw != relay.CLIENT_IP
    entry = cal.entry()
    assert entry["ns_per_connection"] == cal.ns_per_connection and "path" in entry


def test_relay_processes_stop_with_the_lab():
    from kproxy_emu.lab import relay
    from kproxy_emu.lab.topology import Lab

    with Lab(relay.plan()) as lab:
        server = relay.start(lab, "pod", ["server", f"0.0.0.0:{relay.SERVER_PORT}"])
        proc = relay.start(
            lab,
            "node",
            ["relay", f"0.0.0.0:{relay.RELAY_PORT}", f"{relay.SERVER_IP}:{relay.SERVER_PORT}"],
        )
        assert relay.peer_seen(lab, (relay.SERVER_IP, relay.SERVER_PORT)) == relay.CLIENT_IP
        assert relay.peer_seen(lab, (relay.NODE_IP, relay.RELAY_PORT)) == relay.GATEWAY
    assert server.poll() is not None and proc.poll() is not None


def test_calibrate_cli_merges_userspace_into_a_calibration(tmp_path):
    out = tmp_path / "cal.json"
    out.write_text(
        json.dumps(
            {
                "kind": "kproxy-emu kernel calibration",
                "date": "old",
                "modes": {"iptables": {"base_ns": 1.0, "ns_per_rule": 2.0}},
                "runs": [{"mode": "iptables", "services": 1}],
            }
        )
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "kproxy_emu",
            "calibrate",
            "--modes",
            "userspace",
            "--samples",
            "5",
            "--relay-bytes",
            str(1 << 20),
            "--relay-repeats",
            "1",
            "--merge",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],  # this checkout's kproxy_emu
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["date"] == "old"
    assert data["modes"]["iptables"] == {"base_ns": 1.0, "ns_per_rule": 2.0}
    assert data["runs"] == [{"mode": "iptables", "services": 1}]
    us = data["modes"]["userspace"]
    # the figures' sign is test_relay_figures_positive_...'s (larger transfers); here the
    # merge: a measured entry beside the kept one
    assert us["ns_per_connection"] > 0 and isinstance(us["ns_per_byte"], float)
    assert us["date"] != "old" and us["server_saw"] != us["client_address"]
