"""kproxy-emu bench."""

from pathlib import Path

CALIBRATION = Path(__file__).resolve().parents[2] / "benchmarks" / "kernel-calibration.json"


def test_cli_bad_input_exits_2(cli):
    proc = cli("bench", "--modes", "bogus")
    assert proc.returncode == 2 and "--modes" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_userspace_opt_in_with_its_payload_flag(cli, tmp_path):
    out = tmp_path / "b.csv"
    proc = cli(
        "bench",
        "--modes",
        "userspace",
        "--services",
        "30",
        "--packets",
        "200",
        "--repeat",
        "1",
        "--userspace-payload-bytes",
        "512",
        "--calibration",
        CALIBRATION,
        "--csv",
        str(out),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "proxy ns" in proc.stdout and "512 B a packet" in proc.stdout
    header = out.read_text().splitlines()[0].split(",")
    for field in ("proxy_connections", "proxy_relayed", "proxy_bytes_copied", "payload_bytes"):
        assert field in header
    assert "predicted_proxy_ns" in header


def test_cli_bad_payload_exits_2(cli):
    proc = cli("bench", "--modes", "userspace", "--userspace-payload-bytes", "-5")
    assert proc.returncode == 2 and "--userspace-payload-bytes" in proc.stderr


def test_cli_disruption_flag(cli, tmp_path):
    import json

    base = ("bench", "--modes", "iptables", "--services", "30", "--packets", "200")
    out = tmp_path / "b.json"
    proc = cli(*base, "--repeat", "1", "--no-progress", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "disruption: one of the 10 endpoints" in proc.stdout
    flows = [r["flow"] for r in json.loads(out.read_text())]
    assert flows == ["new", "established", "disruption", "disruption"]
    proc = cli(*base, "--repeat", "1", "--no-progress", "--no-disruption", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "disruption" not in proc.stdout
    assert [r["flow"] for r in json.loads(out.read_text())] == ["new", "established"]


def test_cli_profile_reports_where_the_time_goes(cli, tmp_path):
    import json

    out = tmp_path / "b.json"
    proc = cli(
        "bench",
        *("--modes", "iptables,nftables,ipvs,ebpf", "--services", "30", "--packets", "300"),
        *("--repeat", "1", "--no-disruption", "--no-progress", "--profile", "--json", str(out)),
        "--calibration",
        CALIBRATION,
    )
    assert proc.returncode == 0, proc.stderr
    assert "where the time goes" in proc.stdout
    records = json.loads(out.read_text())
    assert {(r["mode"], r["flow"]) for r in records if "profile" in r} == {
        (m, f) for m in ("iptables", "nftables", "ipvs", "ebpf") for f in ("new", "established")
    }
    for r in records:
        prof = r["profile"]
        stages = ("conntrack", "lookups", "policy", "nat", "verdict", "other")
        assert all(prof[s] >= 0 for s in stages) and prof["total"] > 0
        # iptables and nftables: predicted kernel programming time of the syncs
        if r["mode"] in ("iptables", "nftables"):
            assert r["kernel_sync_full_s"] > 0 and r["kernel_sync_update_s"] > 0
        else:
            assert "kernel_sync_update_s" not in r
