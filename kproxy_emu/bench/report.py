"""The bench sweep's outputs: the comparison table, JSON, CSV and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import InputError

TABLE_COLUMNS = (
    ("mode", "mode", "{}"),
    ("services", "services", "{}"),
    ("flow", "flow", "{}"),
    ("ns/pkt", "ns_per_packet", "{:.1f}"),
    ("min", "ns_min", "{:.1f}"),
    ("max", "ns_max", "{:.1f}"),
    ("Mpps", "mpps", "{:.2f}"),
    ("cost p50", "cost_p50", "{:g}"),
    ("cost p99", "cost_p99", "{:g}"),
    ("unit", "cost_unit", "{}"),
    ("ns/rule", "ns_per_rule", "{:.2f}"),
    ("x roofline", "roofline_ratio", "{:.2f}"),
    ("x DRAM floor", "dram_floor_ratio", "{:.2f}"),
    ("kernel ns", "predicted_kernel_ns", "{:.0f}"),
    ("proxy ns", "predicted_proxy_ns", "{:.0f}"),  # userspace only: shown when present
    ("compile s", "compile_s", "{:.2f}"),
    ("prepare s", "prepare_s", "{:.2f}"),
    ("update s", "update_s", "{:.3f}"),
    ("kernel sync s", "kernel_sync_update_s", "{:.3f}"),  # with a calibration: shown when present
    ("RSS MB", "peak_rss_mb", "{:.0f}"),
)
# CSV: object fields become one column per key, ``field.key`` (a record's parameters,
# machine, sync sizes and verdict counts); these stay one column, as compact JSON (free-text keys)
CSV_JSON = ("drop_reasons", "params.origin_mix")
# bench --profile's stages (bench/profile.py), in the pipeline's order
PROFILE_STAGES = ("conntrack", "lookups", "policy", "nat", "verdict")
# the disruption table (bench/disruption.py): shares of the client flows
DISRUPTION_COLUMNS = (
    ("mode", "mode", "{}"),
    ("variant", "variant", "{}"),
    ("change", "change", "{}"),
    ("est moved", "established_moved", "{:.4f}"),
    ("est broken", "established_broken", "{:.4f}"),
    ("new moved", "new_moved", "{:.4f}"),
    ("new moved (kept)", "new_moved_excluding_removed", "{:.4f}"),
    ("new failed", "new_failed", "{:.4f}"),
    ("on removed", "removed_flows", "{}"),
    ("1-1/N", "random_expectation", "{:.4f}"),
)


def _cell(rec: dict, key: str, fmt: str) -> str:
    value = rec.get(key)
    return "-" if value is None else fmt.format(value)


def table(result: dict) -> str:
    """The comparison table: one row per mode x size x flow kind, then sync sizes."""
    records = result["records"]
    columns = [
        c
        for c in TABLE_COLUMNS
        if c[1] not in ("predicted_proxy_ns", "kernel_sync_update_s")
        or any(c[1] in r for r in records)
    ]
    rows = [[h for h, _, _ in columns]]
    rows += [[_cell(r, k, f) for _, k, f in columns] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = ["\n".join(lines), ""]
    out.append("sync cost (full sync / one endpoint change):")
    for r in records:
        if r["flow"] != "new":
            continue
        full = ", ".join(f"{k} {v}" for k, v in r["sync_full"].items())
        upd = ", ".join(f"{k} {v}" for k, v in r["sync_update"].items())
        out.append(f"  {r['mode']:9} {r['services']:>7} services: {full} / {upd}")
    for cell in result.get("skipped", []):
        out.append(f"skipped: {cell['mode']} at {cell['services']} services: {cell['reason']}")
    profiled = [r for r in records if r.get("profile")]
    if profiled:
        out.append(
            "where the time goes (bench --profile: ns per packet of a profiled pass, stage "
            "counters on; share of its total in brackets; plain ns/pkt from the table):"
        )
        for r in profiled:
            prof = r["profile"]
            total = prof["total"] or 1.0
            parts = "  ".join(
                f"{stage} {prof[stage]:.0f} ({prof[stage] / total:.0%})"
                for stage in (*PROFILE_STAGES, "other")
            )
            out.append(
                f"  {r['mode']:9} {r['services']:>7} {r['flow']:>11}: {parts}  total "
                f"{prof['total']:.0f} (plain {r['ns_per_packet']:.0f})"
            )
    drops = [r for r in records if r["flow"] == "new" and r.get("drop_reasons")]
    if drops:
        out.append("new flows dropped or rejected (the deciding rule, from traces):")
        for r in drops:
            for why, count in r["drop_reasons"].items():
                out.append(f"  {r['mode']:9} {r['services']:>7} services: {count:>7}  {why}")
    proxied = [r for r in records if "proxy_relayed" in r]
    if proxied:
        out.append(
            "userspace: ns/pkt times the emulator (its compiled proxy hop), not a userspace "
            "proxy; proxy ns is the calibrated model's overhead per packet (connections x "
            "ns_per_connection + bytes copied x ns_per_byte, from `kproxy-emu calibrate "
            "--modes userspace`; '-' without one), beside the kernel's:"
        )
        for r in proxied:
            out.append(
                f"  {r['mode']:9} {r['services']:>7} services {r['flow']:>11}: "
                f"{r['proxy_connections']} connections opened, {r['proxy_relayed']} packets "
                f"relayed, {r['proxy_bytes_copied']} bytes copied "
                f"({r['payload_bytes']} B a packet, --userspace-payload-bytes)"
            )
    if result.get("disruption"):
        out.append(disruption_table(result["disruption"]))
    ref = result.get("reference")
    if ref:
        out.append(
            f"pure-Python reference evaluator ({ref['mode']}, {ref['services']} services): "
            f"{ref['reference_ns_per_packet']:.0f} ns/pkt vs engine "
            f"{ref['engine_ns_per_packet']:.0f} ns/pkt ({ref['reference_ratio']:.0f}x)"
        )
    roof = {(r["services"]): r for r in records if r["flow"] == "new"}
    if roof:
        out.append(
            "roofline (plain compiled baselines on the same packets): "
            + "; ".join(
                f"{n}: scan {r['roofline_scan_ns_per_rule']:.2f} ns/row, hash "
                f"{r['roofline_hash_ns_per_lookup']:.1f} ns/lookup"
                for n, r in sorted(roof.items())
            )
        )
    m = result.get("machine", {})
    if m:
        out.append(
            f"machine: {m.get('cpu')}, {m.get('cores')} cores, Linux {m.get('kernel')}, "
            f"Python {m.get('python')}"
        )
    return "\n".join(out) + "\n"


def disruption_table(records: list[dict]) -> str:
    """The disruption records as a small table (shares of the client flows)."""
    first = records[0]
    head = (
        f"disruption: one of the {first['endpoints']} endpoints of {first['service']} "
        f"({first['frontend']}) removed, or one added; {first['flows']} client flows; "
        "est: their next packets on the changed node, new: the same 5-tuples as new "
        "connections after the change; (kept): flows whose endpoint stayed; on removed: "
        "flows on the removed endpoint; 1-1/N: a random pick's expected move:"
    )
    rows = [[h for h, _, _ in DISRUPTION_COLUMNS]]
    rows += [[_cell(r, k, f) for _, k, f in DISRUPTION_COLUMNS] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    import textwrap

    return "\n".join([*textwrap.wrap(head, 100, subsequent_indent="  "), *lines])


def write_json(result: dict, path: str) -> None:
    """The sweep's records, then the disruption records (``"flow": "disruption"``)."""
    records = result["records"] + result.get("disruption", [])
    _write(path, json.dumps(records, indent=1) + "\n")


def flat_record(rec: dict, prefix: str = "") -> dict:
    """A record with its object fields spread into ``field.key`` columns (CSV_JSON
    fields kept whole as compact JSON); floats to 9 decimals, shortest form: no binary
    noise (0.009999999999990905)."""
    out: dict = {}
    for k, v in rec.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and name not in CSV_JSON:
            out.update(flat_record(v, f"{name}."))
        elif isinstance(v, (dict, list)):
            out[name] = json.dumps(v, separators=(",", ":"), sort_keys=True)
        elif isinstance(v, float):
            out[name] = repr(round(v, 9))
        else:
            out[name] = v
    return out


def csv_text(records: list[dict]) -> str:
    """Records as CSV, one row each, every JSON field (``flat_record``)."""
    import io

    rows = [flat_record(r) for r in records]
    keys: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                keys.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(result: dict, path: str) -> None:
    _write(path, csv_text(result["records"]))


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror})", file=path) from None


def check_plotting(path: str) -> None:
    """``--plot``'s needs, checked before a sweep: matplotlib importable."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise InputError(
            "plotting needs matplotlib: pip install 'kproxy-emu[plot]'", field="--plot", value=path
        )


def plot(result: dict, path: str) -> None:
    """Three panels: ns per packet vs services (log-log, one line per mode and flow kind),
    rules evaluated per new flow vs services (iptables), sync size vs services."""
    check_plotting(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = result["records"]
    modes = sorted({r["mode"] for r in records})
    color = {m: f"C{k}" for k, m in enumerate(modes)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for mode in modes:
        for flow, style in (("new", "-o"), ("established", "--s")):
            pts = sorted(
                (r["services"], r["ns_per_packet"])
                for r in records
                if r["mode"] == mode and r["flow"] == flow
            )
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, color=color[mode], label=f"{mode} {flow}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("services")
    ax.set_ylabel("ns per packet (median)")
    ax.set_title("Per-packet latency vs cluster size")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[1]
    rule_pts = sorted(
        (r["services"], r["rules_mean"], r["cost_p99"])
        for r in records
        if r["mode"] == "iptables" and r["flow"] == "new"
    )
    if rule_pts:
        xs, mean, p99 = zip(*rule_pts)
        ax.plot(xs, mean, "-o", label="mean")
        ax.plot(xs, p99, "--s", label="p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("services")
    ax.set_ylabel("rules evaluated per new flow")
    ax.set_title("iptables: rules walked grow with rule position")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[2]
    for mode in modes:
        pts = sorted(
            (r["services"], r["sync_full"]["bytes"])
            for r in records
            if r["mode"] == mode and r["flow"] == "new"
        )
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "-o", color=color[mode], label=mode)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("services")
    ax.set_ylabel("full sync text (bytes): restore / nft -f / ipvsadm+ipset")
    ax.set_title("Sync cost vs cluster size")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror})", file=path) from None
    finally:
        plt.close(fig)
