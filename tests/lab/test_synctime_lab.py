"""``calibrate --syncs`` in the kernel lab (root): full loads and the emulator's
single-change syncs loaded as kube-proxy loads them, and the fitted model written to the
calibration (kproxy_emu/lab/synctime.py; the model's arithmetic is tests/unit)."""

import json

import pytest

from kproxy_emu.programtime import CHANGES, SyncTimeModel

pytestmark = [
    pytest.mark.lab,
    pytest.mark.usefixtures("lab_available", "no_leftovers"),
]


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_every_single_change_sync_loads_on_the_full_ruleset(mode):
    """Each sync the emulator computes is accepted by the real tool on top of the loaded
    ruleset (a failed load raises), and is timed with its sizes."""
    from kproxy_emu.lab.synctime import measure

    timings = measure(150, mode, seed=3, repeats=2)
    full, *updates = timings
    assert full.kind == "full" and full.loaded == 0 and full.lines > 150 * 10
    assert [t.kind for t in updates] == list(CHANGES) * 2
    assert all(t.loaded == full.lines and 0 < t.lines < full.lines for t in updates)
    assert all(t.seconds > 0 for t in timings)
    # only a Service that was not programmed before is a sync that adds and rewrites nothing
    assert {t.kind for t in updates if not t.rewrites} == {"service-added"}
    tool = "iptables-restore" if mode == "iptables" else "nft -f"
    assert {t.tool for t in timings} == {tool}


def test_cli_calibrate_syncs_writes_the_model_and_its_validation(tmp_path, capsys):
    from kproxy_emu.cli import main

    out = tmp_path / "cal.json"
    out.write_text(json.dumps({"kernel": "x", "modes": {"iptables": {"base_ns": 1.0}}}))
    code = main(
        [
            "calibrate",
            "--syncs",
            "--modes",
            "iptables",
            "--services",
            "100,250",
            "--validate",
            "180",
            "--repeats",
            "1",
            "--merge",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["modes"]["iptables"] == {"base_ns": 1.0}  # --merge kept the latency entry
    model = SyncTimeModel.from_dict(data["sync_model"])
    assert model.fitted_on == {"iptables": (100, 250)}
    rows = data["sync_validation"]
    assert {r["services"] for r in rows} == {180}
    assert {r["kind"] for r in rows} == {"full", *CHANGES}
    assert all(r["predicted_s"] > 0 and r["measured_s"] > 0 for r in rows)
    assert {r["services"] for r in data["sync_runs"]} == {100, 180, 250}
    err = capsys.readouterr().err
    assert "180 endpoint-added" in err and "written to" in err
    # --validate alone is refused with the flag named
    assert main(["calibrate", "--validate", "5", "--out", str(out)]) == 2
    assert "--validate" in capsys.readouterr().err
