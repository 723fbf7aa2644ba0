"""The bench sweep: records carry the contract fields, the figures are consistent with
the packets (new flows walk rules, established ones hit conntrack), outputs are written,
and bad options are clear errors."""

import json

import numpy as np
import pytest

from kproxy_emu import packets
from kproxy_emu._cext import roofline
from kproxy_emu.bench import report, sweep
from kproxy_emu.errors import InputError

REQUIRED = (
    "mode",
    "services",
    "endpoints",
    "flow",
    "ns_per_packet",
    "ns_min",
    "ns_max",
    "mpps",
    "cost_p50",
    "cost_p99",
    "compile_s",
    "update_s",
    "peak_rss_mb",
)


@pytest.fixture(scope="module")
def result():
    spec = sweep.BenchSpec(services=[60, 240], packets=2000, repeat=2)
    return sweep.run(spec, progress=False)


def test_records_have_the_contract_fields(result):
    recs = result["records"]
    assert [(r["services"], r["mode"], r["flow"]) for r in recs] == [
        (n, m, f) for n in (60, 240) for m in sweep.DEFAULT_MODES for f in ("new", "established")
    ]
    for r in recs:
        for key in REQUIRED:
            assert r[key] is not None, key
        assert r["ns_min"] <= r["ns_per_packet"] <= r["ns_max"]
        assert r["mpps"] == pytest.approx(1e3 / r["ns_per_packet"], rel=1e-2)
        assert r["peak_rss_mb"] > 10


def test_new_flows_walk_rules_and_established_flows_hit_conntrack(result):
    by = {(r["mode"], r["services"], r["flow"]): r for r in result["records"]}
    for mode in sweep.DEFAULT_MODES:
        for n in (60, 240):
            new, est = by[(mode, n, "new")], by[(mode, n, "established")]
            assert new["ct_hit_share"] == 0.0 and est["ct_hit_share"] == 1.0
            if mode == "ebpf":  # no rules: map lookups (socket LB, then one CT lookup)
                assert est["lookups_mean"] < new["lookups_mean"]
            else:
                assert est["rules_mean"] < new["rules_mean"]
            if mode == "userspace":  # its sync's text is the whole rule state every time
                assert new["sync_full"]["lines"] == new["sync_update"]["lines"] > 0
            else:
                assert new["sync_full"]["lines"] > new["sync_update"]["lines"] > 0
    # iptables: the rules a new flow walks grow with the number of services; the
    # verdict-map mode's do not
    ipt, nft = "iptables", "nftables"
    assert by[(ipt, 240, "new")]["rules_mean"] > 2.5 * by[(ipt, 60, "new")]["rules_mean"]
    assert by[(nft, 240, "new")]["rules_mean"] < 1.2 * by[(nft, 60, "new")]["rules_mean"]
    # both modes see the same verdicts for the same traffic
    assert by[(ipt, 240, "new")]["actions"] == by[(nft, 240, "new")]["actions"]


def test_reference_ratio_is_reported(result):
    ref = result["reference"]
    assert ref["reference_ns_per_packet"] > ref["engine_ns_per_packet"] > 0


def test_outputs(result, tmp_path):
    text = report.table(result)
    assert "established" in text and "sync cost" in text
    report.write_json(result, str(tmp_path / "b.json"))
    written = json.loads((tmp_path / "b.json").read_text())
    assert written == result["records"] + result["disruption"]
    assert {r["mode"] for r in written if r["flow"] == "disruption"} == set(sweep.DEFAULT_MODES)
    assert "disruption: one of the 10 endpoints" in text and "new moved (kept)" in text
    report.write_csv(result, str(tmp_path / "b.csv"))
    lines = (tmp_path / "b.csv").read_text().splitlines()
    assert len(lines) == 1 + len(result["records"]) and lines[0].startswith("mode,services")
    pytest.importorskip("matplotlib")
    report.plot(result, str(tmp_path / "b.png"))
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_cost_counters():
    spec = sweep.BenchSpec(services=[50], packets=500, repeat=1)
    a = sweep.run_cell("iptables", 50, spec)
    b = sweep.run_cell("iptables", 50, spec)
    keys = ("cost_p50", "cost_p99", "rules_mean", "actions", "sync_full")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]


def test_predicted_kernel_latency_from_calibration(tmp_path):
    cal = {"modes": {"iptables": {"base_ns": 1000, "ns_per_rule": 14}}}
    assert sweep.predicted_kernel_ns(cal, "iptables", 100, 0) == 1000 + 1400
    assert sweep.predicted_kernel_ns(None, "iptables", 100, 0) is None
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    spec = sweep.BenchSpec(services=[50], packets=500, repeat=1, calibration=str(path))
    new = sweep.run_cell("iptables", 50, spec)[0]
    assert new["predicted_kernel_ns"] == pytest.approx(1000 + 14 * new["rules_mean"], rel=1e-3)


@pytest.mark.parametrize(
    "spec, field",
    [
        (dict(services=[0]), "--services"),
        (dict(modes=["bogus"]), "--modes"),
        (dict(packets=5), "--packets"),
        (dict(new_flow_share=0.0), "--new-flow-share"),
        (dict(popularity="pareto"), "--popularity"),
        (dict(repeat=0), "--repeat"),
    ],
)
def test_bad_options(spec, field):
    with pytest.raises(InputError) as err:
        sweep.BenchSpec(**spec).validate()
    assert err.value.field == field


def test_roofline_baselines_agree_with_numpy():
    rng = np.random.default_rng(3)
    n = 500
    ip = rng.integers(1, 2**32 - 1, n, dtype=np.uint32)
    port = rng.integers(1, 65535, n, dtype=np.uint16)
    proto = np.full(n, 6, np.uint8)
    pick = rng.integers(0, n, 200)
    batch = packets.empty_packets(200)
    batch["dst_ip"], batch["dst_port"], batch["proto"] = ip[pick], port[pick], 6
    first = {}
    for i, key in enumerate(zip(ip.tolist(), port.tolist())):
        first.setdefault(key, i)
    want = [first[(int(ip[j]), int(port[j]))] for j in pick]
    assert roofline.linear_scan(ip, port, proto, batch) == sum(w + 1 for w in want)
    table = roofline.OpenAddressingTable(ip, port, proto)
    out = np.empty(200, np.int64)
    assert table.probe(batch, out) >= 200
    assert [ip[i] == ip[w] and port[i] == port[w] for i, w in zip(out, want)] == [True] * 200
    batch["dst_port"] = 0  # not in the table
    table.probe(batch, out)
    assert (out == -1).all()


def test_userspace_is_in_the_default_sweep_and_its_payload_flag_is_checked():
    assert "userspace" in sweep.MODES and "userspace" in sweep.DEFAULT_MODES
    assert tuple(sweep.BenchSpec().modes) == sweep.DEFAULT_MODES
    sweep.BenchSpec(modes=["iptables", "userspace"]).validate()
    for bad in (-1, 70000, True):
        with pytest.raises(InputError) as err:
            sweep.BenchSpec(userspace_payload_bytes=bad).validate()
        assert err.value.field == "--userspace-payload-bytes"


def test_userspace_cell_counts_the_proxy_and_predicts_its_overhead(tmp_path):
    cal = {"modes": {"userspace": {"ns_per_connection": 1000.0, "ns_per_byte": 0.5}}}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    spec = sweep.BenchSpec(
        services=[40], packets=300, repeat=1, calibration=str(path), userspace_payload_bytes=100
    )
    new, est = sweep.run_cell("userspace", 40, spec)
    assert new["cost_unit"] == "rules" and new["predicted_kernel_ns"] is None
    relayed = new["actions"].get("DNAT", 0)  # every row the proxy took is sent on
    assert new["proxy_relayed"] == relayed > 0
    assert new["proxy_connections"] == relayed  # new flows: one connection each
    assert new["payload_bytes"] == 100 and new["proxy_bytes_copied"] == 100 * relayed
    want = (new["proxy_connections"] * 1000.0 + new["proxy_bytes_copied"] * 0.5) / 300
    assert new["predicted_proxy_ns"] == pytest.approx(want, abs=0.01)
    # established: the proxy answered the clients, their next packets hit conntrack and go
    # through the proxy's open connections (UDP sessions idle past their timeout reopen)
    assert est["ct_hit_share"] == 1.0
    assert est["proxy_relayed"] == relayed
    assert est["proxy_connections"] < new["proxy_connections"]
    assert est["predicted_proxy_ns"] < new["predicted_proxy_ns"]
    text = report.table({"records": [new, est]})
    assert "proxy ns" in text and "times the emulator" in text
    assert sweep.predicted_proxy_ns(None, 1, 1) is None
    assert sweep.predicted_proxy_ns({"modes": {"iptables": {}}}, 1, 1) is None


def test_table_has_no_proxy_column_without_userspace(result):
    kernel = dict(result, records=[r for r in result["records"] if r["mode"] != "userspace"])
    assert "proxy ns" not in report.table(kernel)
    assert "proxy ns" in report.table(result)
