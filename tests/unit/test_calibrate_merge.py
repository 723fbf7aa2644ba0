"""calibrate.merge: a userspace relay calibration added to a kernel one."""

from kproxy_emu.lab.calibrate import merge


def test_merge_keeps_other_modes_and_replaces_the_measured_one():
    old = {
        "kind": "k",
        "date": "d0",
        "kernel": "k0",
        "modes": {"iptables": {"ns_per_rule": 1.0}, "userspace": {"ns_per_byte": 9.0}},
        "runs": [{"mode": "iptables"}, {"mode": "nftables"}],
    }
    new = {
        "date": "d1",
        "kernel": "k1",
        "modes": {"userspace": {"ns_per_byte": 0.5, "ns_per_connection": 2.0}},
        "runs": [],
    }
    got = merge(old, new)
    assert got["date"] == "d0" and got["kernel"] == "k0"
    assert got["modes"]["iptables"] == {"ns_per_rule": 1.0}
    assert got["modes"]["userspace"] == {
        "ns_per_byte": 0.5,
        "ns_per_connection": 2.0,
        "date": "d1",
        "kernel": "k1",
    }
    assert got["runs"] == [{"mode": "iptables"}]  # nftables has no entry left: its runs go
