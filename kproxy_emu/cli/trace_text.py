"""``kproxy-emu trace`` as text: the packet's path, the Service it was addressed to, the
verdict and where else it could have gone, for a reader who has not seen the rules."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..dataplane.tracer import TraceResult, TraceStep

_VIA = {
    "cluster-ip": "cluster IP",
    "external-ip": "external IP",
    "load-balancer": "load-balancer IP",
    "node-port": "node port",
}
# an inline verdict map ("numgen random mod 100 vmap { 0 : goto ..., ... }"): one element
# per endpoint, shortened when the matched element is shown beside it
_INLINE_MAP = re.compile(r"vmap \{ [^{}]* \}")


def format_trace(result: TraceResult) -> list[str]:
    """The lines printed for one traced packet."""
    lines = []
    steps = result["steps"]
    # nftables: one table holds every chain; name it once, then each step by its chain
    nft = sorted({s["table"] for s in steps if _is_nft(s)})
    one_table = len(nft) == 1
    bpf = result.get("mode") == "ebpf"  # map lookups, not rules
    if steps:
        head = "path" if result["steps_omitted"] else "rules evaluated"
        if bpf:
            head = "map lookups" if not result["steps_omitted"] else "path"
            lines.append(f"{head} (eBPF datapath):")
        else:
            lines.append(f"{head} (table {nft[0]}):" if one_table else f"{head}:")
        lines.extend(_step(step, one_table) for step in steps)
    if result["steps_omitted"]:
        n = result["steps_omitted"]
        what = "map lookup" if bpf else "rule"
        verb = "that missed" if bpf else "evaluated without matching"
        lines.append(
            f"({n:,} {what}{'s' if n != 1 else ''} {verb} not shown; --all-rules shows them)"
        )
    service = result["service"]
    if service is not None:
        port = service["port_name"] or str(service["port"])
        number = f" {service['port']}" if service["port"] else ""  # 0: a dump's NodePort
        lines.append(
            f"service: {service['namespace']}/{service['service']} port {port} "
            f"({service['protocol']}{number}), reached on its "
            f"{_VIA.get(service['via'], service['via'])} {service['address']}"
        )
    else:
        lines.append("service: none (not addressed to a Service port)")
    policy = result.get("policy")
    if policy is not None:
        if not policy["evaluated"]:
            lines.append(f"policy ({policy['engine']}): a known flow, decided when it was new")
        for side in ("egress", "ingress"):
            decision = policy[side]  # type: ignore[literal-required]
            if decision is not None:
                lines.append(f"policy ({policy['engine']}) {side}: {decision['text']}")
    lines.append(
        f"from {result['from']}: {result['verdict']}"
        + (f" to {result['dnat']}" if result["dnat"] else "")
        + (", masqueraded" if result["masquerade"] else "")
        + (
            f" ({result['cost']['lookups']} map lookups)"
            if bpf
            else f" ({result['cost']['rules_evaluated']} rules evaluated)"
        )
    )
    candidates = result["candidates"]
    if candidates:
        n = len(candidates)
        lines.append(f"could reach ({n} endpoint{'s' if n != 1 else ''}):")
        for c in candidates:
            p = c["fraction"] or f"{c['probability']:.4f}"
            lines.append(
                f"  {c['endpoint']:24} p={p}" + ("  masqueraded" if c["masquerade"] else "")
            )
    return lines


def _is_nft(step: TraceStep) -> bool:
    # iptables rules name their chain (-A CHAIN); conntrack, IPVS and userspace-proxy lines
    # say where they are
    return step["table"] not in ("conntrack", "ipvs", "userspace", "policy", "bpf") and not step[
        "text"
    ].startswith("-A ")


def _step(step: TraceStep, one_table: bool) -> str:
    mark = "=>" if step["matched"] else "  "
    table, chain, text = step["table"], step["chain"], step["text"]
    if table == "bpf":
        return f"{mark} {chain}: {text}"
    if not _is_nft(step):
        return f"{mark} {table:6} {text}"
    element = step.get("element")
    if element is not None:
        text = _INLINE_MAP.sub(lambda m: _short_map(m.group(0)), text)
        text += f"  [element {element}]"
    return f"{mark} {chain}: {text}" if one_table else f"{mark} {table} {chain}: {text}"


def _short_map(text: str) -> str:
    elements = text.count(" : ")
    return text if elements <= 2 else f"vmap {{ {elements} elements }}"
