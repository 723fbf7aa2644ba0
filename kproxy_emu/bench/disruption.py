"""Disruption: when a backend is added to or removed from a Service, which client flows
move to another endpoint, measured through the public Dataplane API for any mode.

One Service of a small synthetic cluster (a LoadBalancer by default, reached from outside;
or a NodePort, or a ClusterIP from pods) with ``endpoints`` ready endpoints, and ``flows``
seeded clients (distinct source address and port) to its frontend:

1. before: on a fresh node (``reset_state``) each flow's first packet (TCP SYN) is
   processed; the endpoint it was DNATed to (``dp.endpoints[verdict.endpoint]``) is the
   flow's endpoint; the endpoints' replies (SYN-ACK) follow, so every flow is established
   in conntrack (and, in IPVS, in the connection table; userspace: the proxy's);
2. the change: one endpoint removed from the Service's EndpointSlice (chosen by the seed),
   or one endpoint added (a new address), applied with ``dp.update(cluster)`` (the partial
   sync kube-proxy runs after the watch event);
3. established: without any reset, each flow's next packet (an ACK) on the changed node:
   the endpoint it now reaches, compared with its endpoint before;
4. new connections: the same 5-tuples as first packets on a node with no flow state that
   went through the same change (``Dataplane(before)`` then ``update(after)``, the same
   mode options, another seed: a reconnect after the client's old entry is gone, or the
   same client reaching another node; a fresh random stream, as a later connection on the
   same node draws, where ``reset_state`` on the same node would replay the draws of step
   1). Hash schedulers ignore the seed (IPVS ``sh``/``mh`` keys are the kernel's fixed
   ones), so their picks are comparable across nodes, as they are in the kernel.

Records (one per mode variant and change; every field in docs/bench-output.md): shares
are of flows, with the counts behind them, so a test can put a binomial tolerance on
them. The same seed gives the same records.

The eBPF mode plugs in by name (or options object) once it is a Dataplane mode; a
mode's variants (IPVS's schedulers) come from :data:`VARIANTS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, KproxyError

DEFAULT_FLOWS = 4000
DEFAULT_ENDPOINTS = 10
# the synthetic cluster around the Service: its size does not change which endpoint a
# flow gets, so it is kept small (the Dataplane build dominates the measurement's time)
CLUSTER_SERVICES = 40
CHANGES = ("remove", "add")
FRONTENDS = ("loadBalancer", "nodePort", "clusterIP")
# where clients come from: outside (RFC 2544's benchmarking range, 131,070 addresses, so a
# scheduler hashing the source address alone sees as many distinct clients as flows) or
# pods (a /16 of the cluster CIDR the sweep's nodes detect as local; no endpoint is there)
EXTERNAL_CLIENTS = (int(np.uint32(0xC6120000)), 1 << 17)  # 198.18.0.0/15
POD_CLIENTS = (int(np.uint32(0x0AC80000)), 1 << 16)  # 10.200.0.0/16
CLUSTER_CIDR = "10.0.0.0/8"
ADDED_ENDPOINT = "10.250.0.1"  # the address given to an added endpoint (no synthetic pod has it)


def _ipvs_variants() -> list[Any]:
    from ..dataplane import IpvsOptions

    # rr: kube-proxy's default; sh: source hashing; mh: Maglev hashing (ip_vs_mh)
    return [IpvsOptions(scheduler=s) for s in ("rr", "sh", "mh")]


# mode name -> the options objects measured as separate rows (a mode not listed: its
# defaults, one row)
def _ebpf_variants() -> list[Any]:
    from ..dataplane import EbpfOptions

    # Cilium's backend selection: a random slot, or Maglev consistent hashing
    return [EbpfOptions(lb_algorithm=a) for a in ("random", "maglev")]


VARIANTS: dict[str, Callable[[], list[Any]]] = {"ipvs": _ipvs_variants, "ebpf": _ebpf_variants}


def variant_name(options: Any) -> str | None:
    """What distinguishes a row of a mode: the IPVS scheduler, an eBPF mode's
    ``lb_algorithm``; None for a mode's defaults with no such choice."""
    for attr in ("scheduler", "lb_algorithm", "algorithm"):
        value = getattr(options, attr, None)
        if isinstance(value, str):
            return value
    if getattr(options, "mode", None) == "ipvs":
        return "rr"  # scheduler None: the configuration's, whose default is rr
    return None


def make_cluster(endpoints: int, seed: int):
    """The synthetic cluster (the bench sweep's generator, few Services)."""
    from .sweep import make_cluster as sweep_cluster

    return sweep_cluster(CLUSTER_SERVICES, endpoints, seed)


def pick_service(cluster, frontend: str):
    """The first TCP Service (by name) with the frontend kind, externalTrafficPolicy
    Cluster for the external kinds (so any node serves outside clients), no session
    affinity, no loadBalancerSourceRanges and one EndpointSlice whose endpoints are all
    ready: (service, slice key)."""
    slices: dict[tuple[str, str], list] = {}
    for key, sl in cluster.endpoint_slices.items():
        slices.setdefault((sl.namespace, sl.service_name), []).append(key)
    for key in sorted(cluster.services):
        svc = cluster.services[key]
        if (
            not svc.proxied
            or len(svc.ports) != 1
            or svc.ports[0].protocol != "TCP"
            or svc.session_affinity != "None"
            or svc.lb_source_ranges
            or len(slices.get(key, [])) != 1
        ):
            continue
        if frontend == "loadBalancer" and not any(i.ip for i in svc.lb_ingress):
            continue
        if frontend == "nodePort" and not svc.ports[0].node_port:
            continue
        if frontend != "clusterIP" and svc.external_traffic_policy != "Cluster":
            continue
        sl = cluster.endpoint_slices[slices[key][0]]
        if sl.endpoints and all(e.ready for e in sl.endpoints):
            return svc, slices[key][0]
    raise KproxyError(f"the synthetic cluster has no TCP Service with a {frontend} frontend")


def changed_cluster(cluster, slice_key, change: str, seed: int):
    """A copy of ``cluster`` with one endpoint of the slice removed (chosen by ``seed``) or
    one added (ADDED_ENDPOINT on the first endpoint's node): (cluster, the endpoint's
    address)."""
    sl = cluster.endpoint_slices[slice_key]
    eps = list(sl.endpoints)
    if change == "remove":
        gone = eps.pop(int(np.random.default_rng([seed, 0xD15]).integers(len(eps))))
        address = gone.addresses[0]
    else:
        address = ADDED_ENDPOINT
        eps.append(dataclasses.replace(eps[0], addresses=[address], hostname="", target_ref=None))
    new = dataclasses.replace(cluster, endpoint_slices=dict(cluster.endpoint_slices))
    new.endpoint_slices[slice_key] = dataclasses.replace(sl, endpoints=eps)
    return new, address


def client_packets(dp, svc, frontend: str, flows: int, seed: int):
    """``flows`` TCP SYNs from distinct seeded clients (address, port) to the Service's
    frontend on this node, 10 µs apart."""
    from .. import packets

    rng = np.random.default_rng([seed, 0xC11])
    if frontend == "clusterIP":
        (base, size), origin = POD_CLIENTS, packets.Origin.POD
        dst, dport = svc.cluster_ip, svc.ports[0].port
    else:
        (base, size), origin = EXTERNAL_CLIENTS, packets.Origin.EXTERNAL
        if frontend == "loadBalancer":
            dst, dport = next(i.ip for i in svc.lb_ingress if i.ip), svc.ports[0].port
        else:
            local = dp.options.node.local_ips
            dst = next(ip for ip in local if ":" not in ip and not ip.startswith("127."))
            dport = svc.ports[0].node_port
    low, high = packets.EPHEMERAL_PORTS
    seen: set[tuple[int, int]] = set()
    rows: list[tuple[int, int]] = []
    while len(rows) < flows:
        ip = base + 1 + int(rng.integers(size - 2))  # no network or broadcast address
        port = int(rng.integers(low, high + 1))
        if (ip, port) not in seen:
            seen.add((ip, port))
            rows.append((ip, port))
    batch = packets.empty_packets(flows)
    batch["ts"] = 1.0 + np.arange(flows) * 1e-5
    batch["src_ip"] = [ip for ip, _ in rows]
    batch["src_port"] = [port for _, port in rows]
    batch["dst_ip"] = packets.ip_to_u32(dst)
    batch["dst_port"] = dport
    batch["proto"] = packets.PROTO_NUMBERS["tcp"]
    batch["tcp_flags"] = packets.TcpFlag.SYN
    batch["origin"] = origin
    batch["family"] = 4
    return batch


def _addresses(dp, verdicts) -> np.ndarray:
    """Each row's endpoint address ("ip:port"), "" where the packet reached none (not
    DNATed to an endpoint: dropped, rejected or accepted untranslated)."""
    from .. import packets

    table = np.asarray([*dp.endpoints, ""], dtype=object)
    idx = np.where(verdicts["endpoint"] >= 0, verdicts["endpoint"], len(table) - 1)
    out = table[idx]
    out[verdicts["action"] >= packets.Action.DROP] = ""
    return out


def _established(dp, batch, first, start: float) -> None:
    """The endpoints' replies to the first packets (SYN-ACK), so the flows are established
    (userspace: the proxy answers the client, the endpoint the proxy)."""
    from .. import packets
    from .sweep import _proxy_replies

    alive = first["action"] <= packets.Action.DNAT
    portals = dict(getattr(dp.backend, "last_portals", {})) if dp.mode == "userspace" else None
    dp.process(packets.replies(batch[alive], first[alive], start=start))
    if portals is not None:
        dp.process(_proxy_replies(batch, first, alive, portals, start=dp.clock + 0.001))


def measure(
    mode: Any = "iptables",
    *,
    endpoints: int = DEFAULT_ENDPOINTS,
    flows: int = DEFAULT_FLOWS,
    seed: int = 0,
    frontend: str = "loadBalancer",
    changes: Sequence[str] = CHANGES,
    cluster=None,
) -> list[dict]:
    """The disruption records of one mode (a name or an options object), one per change."""
    from .. import packets
    from ..dataplane import Dataplane
    from ..dataplane.backend import mode_options

    if isinstance(endpoints, bool) or not isinstance(endpoints, int) or endpoints < 2:
        raise InputError("must be at least 2 (one is removed)", field="endpoints", value=endpoints)
    if isinstance(flows, bool) or not isinstance(flows, int) or flows < 1:
        raise InputError("must be a positive integer", field="flows", value=flows)
    if frontend not in FRONTENDS:
        raise InputError(f"must be one of {', '.join(FRONTENDS)}", field="frontend", value=frontend)
    for change in changes:
        if change not in CHANGES:
            raise InputError("must be remove or add", field="changes", value=change)
    opts = mode_options(mode)
    if cluster is None:
        cluster = make_cluster(endpoints, seed)
    svc, slice_key = pick_service(cluster, frontend)
    n_before = len(cluster.endpoint_slices[slice_key].endpoints)
    other_seed = int(np.random.SeedSequence([seed, 0x0DE]).generate_state(1)[0] >> 1)

    def node(s: int):
        return Dataplane(cluster, opts, cluster_cidr=CLUSTER_CIDR, seed=s)

    records = []
    for change in changes:
        after, address = changed_cluster(cluster, slice_key, change, seed)
        dp = node(seed)
        batch = client_packets(dp, svc, frontend, flows, seed)
        dp.reset_state()
        first = dp.process(batch)
        before = _addresses(dp, first)
        _established(dp, batch, first, start=dp.clock + 0.001)
        sync = dp.update(after)
        nxt = dp.process(packets.next_packets(batch, start=dp.clock + 1.0))
        est = _addresses(dp, nxt)
        live = {
            f"{a}:{p.port}"
            for e in after.endpoint_slices[slice_key].endpoints
            for a in e.addresses
            for p in after.endpoint_slices[slice_key].ports
        }
        twin = node(other_seed)
        twin.update(after)
        new = _addresses(twin, twin.process(batch))

        served = before != ""
        removed = served & np.asarray([a.rsplit(":", 1)[0] == address for a in before])
        if change == "add":
            removed[:] = False
        kept = served & ~removed
        in_live = np.asarray([a in live for a in est])
        new_live = np.asarray([a in live for a in new])
        est_dropped = served & (nxt["action"] >= packets.Action.DROP)
        est_stale = served & (est != "") & ~in_live
        new_ok = served & new_live

        def share(mask, of) -> float:
            total = int(of.sum())
            return round(float((mask & of).sum()) / total, 4) if total else 0.0

        est_moved = served & (est != before) & (est != "")
        new_moved = served & new_ok & (new != before)
        records.append(
            {
                "flow": "disruption",
                "mode": opts.mode,
                "variant": variant_name(opts),
                "change": change,
                "frontend": frontend,
                "service": f"{svc.namespace}/{svc.name}:{svc.ports[0].port}",
                "endpoint_changed": address,
                "endpoints": n_before,
                "endpoints_after": len(live),
                "flows": flows,
                "served_before": int(served.sum()),
                "removed_flows": int(removed.sum()),
                "kept_flows": int(kept.sum()),
                "established_moved": share(est_moved, kept),
                "established_moved_removed": share(est_moved, removed),
                "established_to_removed": share(est_stale, served),
                "established_dropped": share(est_dropped, served),
                "established_broken": share(est_stale | est_dropped, served),
                "established_ct_hit": share(nxt["ct_hit"].astype(bool), served),
                "new_moved": share(new_moved, served),
                "new_moved_excluding_removed": share(new_moved, kept),
                "new_moved_removed": share(new_moved, removed),
                "new_failed": share(~new_ok, served),
                "random_expectation": round(1.0 - 1.0 / len(live), 4) if live else None,
                "sync_update": sync.cost(),
                "seed": seed,
            }
        )
    return records


def run(
    modes: Sequence[Any],
    *,
    endpoints: int = DEFAULT_ENDPOINTS,
    flows: int = DEFAULT_FLOWS,
    seed: int = 0,
    frontend: str = "loadBalancer",
) -> list[dict]:
    """The records of every mode (a name expands to its :data:`VARIANTS`; an options
    object is measured as given), remove then add for each."""
    cluster = make_cluster(endpoints, seed)
    records: list[dict] = []
    for mode in modes:
        variants = VARIANTS[mode]() if isinstance(mode, str) and mode in VARIANTS else [mode]
        for opts in variants:
            records += measure(
                opts,
                endpoints=endpoints,
                flows=flows,
                seed=seed,
                frontend=frontend,
                cluster=cluster,
            )
    return records
