"""The ``kproxy-emu bench`` sweep: every mode at every cluster size, measured the same way.

One cell (a mode at a size) runs in a forked child process, so its peak memory is its
own (``ru_maxrss`` of a fresh fork starts at the small parent's). In a cell:
- compile: ``Dataplane(...)`` (proxy view, mode compiler, applying the sync), then the
  engine's tables (``prepare``), timed apart;
- traffic: ``packets`` new flows from pods (and from outside / the host if the origin mix
  says so) to the frontends this node serves, ``uniform`` or ``zipf`` popularity, seeded;
- new flows: the batch on a dataplane with empty state (``reset_state``): every packet is
  a flow's first and walks the rules; ``repeat`` times, median / min / max; the packets
  dropped or rejected, grouped by reason (``drop_reasons``: the deciding rule, traced);
- established flows: the same flows' next packets (TCP ACK) after a warm-up pass: each
  is a conntrack hit;
- update: one endpoint of one service turns not-ready; the time of ``Dataplane.update``
  and the size of what that sync wrote;
- roofline: the same packets through a plain compiled linear scan of the service rows
  and a plain open-addressing table of the same frontends (cext/roofline.pyx);
- reference: the pure-Python evaluator on a few packets of the smallest size.

userspace (in the default sweep: its proxy hop is compiled, cext/userspace.pyx; a cell
costs about 2-2.5x the iptables cell of the same size, as every relayed packet walks the
portal chains twice): the same cell, plus the proxy's counts for each timed batch
(connections it opened, packets it relayed, bytes copied: relayed packets x
``userspace_payload_bytes``, since the packet array carries no length) and, with a
calibration holding ``modes.userspace`` (``kproxy-emu calibrate --modes userspace``), the
overhead those counts predict: connections x ns_per_connection + bytes x ns_per_byte, per
packet. ``ns_per_packet`` of a userspace record times the emulator (the chains, the
compiled proxy hop and the proxy's own packet through the hooks), not a userspace proxy;
the predicted overhead is the model's.

disruption (``BenchSpec.disruption``, on by default, about a second): after the cells, the
share of client flows that move when one endpoint of a Service is removed or added, per
mode (IPVS per scheduler), in ``result["disruption"]`` (kproxy_emu/bench/disruption.py).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import multiprocessing
import os
import resource
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CapacityError, InputError, KproxyError

MODES = ("iptables", "nftables", "ipvs", "userspace", "ebpf")  # modes the sweep can run
DEFAULT_MODES = MODES
# bytes each packet the userspace proxy relays is taken to carry (the packet array has no
# length): a full TCP segment on a 1500-byte MTU with timestamps (1500 - 20 - 20 - 12)
DEFAULT_PAYLOAD_BYTES = 1448
DEFAULT_SERVICES = (1000, 3000, 10000)
REFERENCE_SERVICES = 1000
EBPF_LB_MAP_MAX = 1 << 24  # the eBPF cells' bpf-lb-map-max (Cilium's default 65536 fits ~3k)


@dataclass
class BenchSpec:
    services: Sequence[int] = DEFAULT_SERVICES
    endpoints: int = 10
    modes: Sequence[str] = DEFAULT_MODES
    packets: int = 100_000
    new_flow_share: float = 1.0  # of the "new" batch; 1.0: every packet opens a flow
    popularity: str = "uniform"
    seed: int = 0
    repeat: int = 3
    origin_mix: dict[str, float] = field(default_factory=lambda: {"pod": 1.0})
    calibration: str | None = None  # kproxy-emu calibrate's output, for predicted latency
    ipvs_conn_tab_bits: int | None = None  # ip_vs conn_tab_bits for the ipvs cells
    userspace_payload_bytes: int = DEFAULT_PAYLOAD_BYTES  # per relayed packet (userspace)
    disruption: bool = True  # the disruption pass (bench/disruption.py); needs 2+ endpoints
    profile: bool = False  # one more pass per flow kind with the stage counters on
    # real traffic instead of synthetic: a pcap/pcapng capture (kproxy_emu.pcap) replayed
    # through the cluster of ``files`` (manifests / kubectl dumps) as ``node`` sees it;
    # sources in ``pod_cidrs`` (default: ``cluster_cidr``) are pods
    pcap: str | None = None
    files: Sequence[str] = ()
    node: str | None = None
    cluster_cidr: str = "10.0.0.0/8"
    pod_cidrs: Sequence[str] = ()

    def validate(self) -> None:
        for n in self.services:
            if not isinstance(n, int) or n < 1:
                raise InputError("must be positive integers", field="--services", value=n)
        for m in self.modes:
            if m not in MODES:
                raise InputError(
                    f"unknown or not yet benchmarked mode (available: {', '.join(MODES)})",
                    field="--modes",
                    value=m,
                )
        if self.endpoints < 1:
            raise InputError("must be at least 1", field="--endpoints", value=self.endpoints)
        if self.packets < 100:
            raise InputError("must be at least 100", field="--packets", value=self.packets)
        if self.repeat < 1:
            raise InputError("must be at least 1", field="--repeat", value=self.repeat)
        if not 0.0 < self.new_flow_share <= 1.0:
            raise InputError(
                "must be in (0, 1]", field="--new-flow-share", value=self.new_flow_share
            )
        pay = self.userspace_payload_bytes
        if isinstance(pay, bool) or not isinstance(pay, int) or not 0 <= pay <= 65535:
            raise InputError("must be 0..65535", field="--userspace-payload-bytes", value=pay)
        bits = self.ipvs_conn_tab_bits
        if bits is not None and (isinstance(bits, bool) or bits not in range(8, 21)):
            raise InputError("must be 8..20", field="--ipvs-conn-tab-bits", value=bits)
        if self.popularity not in ("uniform", "zipf"):
            raise InputError("must be uniform or zipf", field="--popularity", value=self.popularity)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError("must be a non-negative integer", field="--seed", value=self.seed)
        if self.pcap is not None and not self.files:
            raise InputError(
                "a capture needs the cluster it was taken on (--manifests FILE...)",
                field="--pcap",
                value=self.pcap,
            )


NODE_PORT_SERVICES = 10_000  # of each of NodePort and LoadBalancer, in a synthetic cluster


def make_cluster(services: int, endpoints: int, seed: int):
    """The synthetic cluster of one size: ClusterIP, NodePort and LoadBalancer services
    with one port each, all endpoints ready (the sweep measures lookup cost, so every
    service is reachable). 10% NodePort and 10% LoadBalancer, but at most about
    NODE_PORT_SERVICES of each: a node has 35,536 node ports at most (30000-65535), and a
    LoadBalancer service takes a second one for its health check."""
    from .. import synth

    share = min(0.1, NODE_PORT_SERVICES / services) if services else 0.1
    return synth.cluster(
        services,
        endpoints=endpoints,
        seed=seed,
        nodes=10,
        type_mix={"ClusterIP": 1 - 2 * share, "NodePort": share, "LoadBalancer": share},
        ports_per_service=(1.0,),
        terminating_share=0,
        not_ready_share=0,
        affinity_share=0,
    )


def spec_cluster(spec: BenchSpec, services: int):
    """The cell's cluster: the given manifests (a capture's), else a synthetic one."""
    if spec.files:
        from ..model import Cluster

        return Cluster.from_files(list(spec.files))
    return make_cluster(services, spec.endpoints, spec.seed)


def captured(dp, spec: BenchSpec):
    """The capture's packets as the node sees them (origins from its addresses and the
    pod CIDRs); the skipped ones are counted by kproxy_emu.pcap."""
    from .. import pcap

    cap = pcap.read(
        spec.pcap or "",
        node_ips=dp.options.node.local_ips,
        pod_cidrs=list(spec.pod_cidrs) or [spec.cluster_cidr],
    )
    if not len(cap.packets):
        raise InputError(
            "no IPv4 TCP/UDP/SCTP packet in the capture: " + cap.summary(),
            field="--pcap",
            value=spec.pcap,
        )
    return cap.packets


def one_endpoint_changed(cluster):
    """A copy of the cluster where one ready endpoint of the first sliced service is not
    ready any more (the smallest update kube-proxy syncs)."""
    new = copy.copy(cluster)
    new.endpoint_slices = dict(cluster.endpoint_slices)
    for key, sl in cluster.endpoint_slices.items():
        if sl.endpoints:
            eps = list(sl.endpoints)
            eps[0] = dataclasses.replace(eps[0], ready=False, serving=False)
            new.endpoint_slices[key] = dataclasses.replace(sl, endpoints=eps)
            return new
    raise KproxyError("the cluster has no endpoint to change")


def traffic(dp, spec: BenchSpec, seed: int):
    """The sweep's batch for one Dataplane: ``spec.packets`` packets (seeded) to the
    frontends its node serves, from the origins of ``spec.origin_mix`` that can reach one."""
    from .. import packets

    targets = dp.packet_targets()
    mix = {
        k: v
        for k, v in spec.origin_mix.items()
        if (targets["origins"] & (1 << packets.ORIGIN_NAMES.index(k))).any()
    }
    return packets.synth(
        targets,
        spec.packets,
        seed=seed,
        popularity=spec.popularity,
        new_flow_share=spec.new_flow_share,
        origin_mix=mix or {"pod": 1.0},
        sources=_sources(dp),
        rate=1e7,
    )


def _sources(dp) -> dict[str, list[str]]:
    pods = (
        dp.options.detect_local_value
        if dp.options.detect_local_mode == "ClusterCIDR"
        else "10.0.0.0/8"
    )
    host = [ip for ip in dp.options.node.local_ips if ":" not in ip]
    return {"pod": [pods], "external": ["203.0.113.0/24"], "host": host[:1]}


DROP_TRACES = 32  # kinds of drop traced, most dropped first


def drop_reasons(dp, batch, verdicts, limit: int = DROP_TRACES) -> dict[str, int]:
    """Why packets were dropped or rejected: {reason: packets}. Dropped packets are
    grouped by kind (verdict, origin, the frontend's kind and its Service's traffic
    policies and source ranges: what kube-proxy's drop rules look at) and one packet of
    each kind, most dropped first, is traced; the reason is the rule that decided (its
    comment, the Service and chain hashes left out, so one policy over many Services is
    one reason). Leaves the Dataplane reset."""
    from .. import packets

    bad = np.flatnonzero(verdicts["action"] >= packets.Action.DROP)
    if bad.size == 0:
        return {}
    kinds = _frontend_kinds(dp)
    groups: dict[tuple, list[int]] = {}
    for i in bad.tolist():
        row = batch[i]
        key = (int(row["dst_ip"]), int(row["dst_port"]), int(row["proto"]))
        svc, kind = kinds.get(key) or kinds.get((None, *key[1:])) or (None, ("other",))
        group = (int(verdicts["action"][i]), int(row["origin"]), kind)
        groups.setdefault(group, []).append(i)
    order = sorted(groups.items(), key=lambda g: (-len(g[1]), g[1][0]))
    reasons: dict[str, int] = {}
    dp.reset_state()
    for (action, _, _), rows in order[:limit]:
        row = batch[rows[0] : rows[0] + 1]
        key = (int(row["dst_ip"][0]), int(row["dst_port"][0]), int(row["proto"][0]))
        svc = (kinds.get(key) or kinds.get((None, *key[1:])) or (None,))[0]
        reason = _traced_reason(dp, packets.to_strings(row)[0], float(row["ts"][0]), svc, action)
        reasons[reason] = reasons.get(reason, 0) + len(rows)
    rest = sum(len(rows) for _, rows in order[limit:])
    if rest:
        reasons[f"not traced (more than {limit} kinds)"] = rest
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def _traced_reason(dp, line: str, ts: float, svc, action: int) -> str:
    """The deciding rule of one dropped packet: traced on a twin node holding only its
    Service (a trace walks every rule it meets, seconds at 10,000 Services), or on the
    node itself when there is no Service or the twin decides otherwise."""
    from .. import packets
    from ..dataplane import Dataplane

    if svc is not None and getattr(dp.mode_options, "tables", None) is None:
        cluster = dp.cluster
        slices = {
            k: s
            for k, s in cluster.endpoint_slices.items()
            if s.namespace == svc.namespace and s.service_name == svc.name
        }
        sub = dataclasses.replace(cluster, services={svc.key: svc}, endpoint_slices=slices)
        result = Dataplane(sub, dp.mode_options, **dp._build_args).trace(line, time=ts)
        if result["verdict"] == packets.Action(action).name:
            return _decided_by(result)
    return _decided_by(dp.trace(line, time=ts))


def _frontend_kinds(dp) -> dict[tuple, tuple]:
    """(ip, port, proto) of each frontend (ip None: a NodePort on any node address) →
    (its Service, what decides a drop there: the frontend's kind, the Service's traffic
    policies and whether it has source ranges)."""
    from ..packets import PROTO_NUMBERS, ip_to_u32

    kinds: dict[tuple, tuple] = {}
    for svc in dp.cluster.services.values():
        if not svc.proxied:
            continue
        policy = (
            bool(svc.lb_source_ranges),
            svc.internal_traffic_policy,
            svc.external_traffic_policy,
        )
        for p in svc.ports:
            proto = PROTO_NUMBERS[p.protocol.lower()]
            ips = [("clusterIP", svc.cluster_ip)]
            ips += [("externalIP", ip) for ip in svc.external_ips]
            ips += [("loadBalancer", ing.ip) for ing in svc.lb_ingress if ing.ip]
            for kind, ip in ips:
                if ip and ":" not in ip and ip != "None":
                    kinds[(int(ip_to_u32(ip)), p.port, proto)] = (svc, (kind, *policy))
            if p.node_port:
                kinds[(None, p.node_port, proto)] = (svc, ("nodePort", *policy))
    return kinds


def _decided_by(result) -> str:
    """The rule a traced drop ended at, as a reason shared by every Service."""
    import re

    verdict = str(result["verdict"])
    steps = [s for s in result["steps"] if s["matched"]]
    if not steps:
        return f"{verdict} before any rule (conntrack: {result['conntrack']})"
    text = str(steps[-1]["text"])
    comment = re.search(r'comment "([^"]*)"', text)
    why = comment.group(1) if comment else text
    # ns/name[:port] (a Service name starts with a letter: CIDRs stay)
    why = re.sub(r"[\w.-]+/[a-z][\w.-]*(:[\w.-]*)?", "<service>", why)
    why = re.sub(r"\{[^}]*\}", "{...}", why)  # an nft set's elements
    why = re.sub(r"\b(KUBE-[A-Z0-9]+)-[A-Z0-9]{16}\b", r"\1-<hash>", why)
    return f"{verdict}: {why}"


_DRAM_NS: float | None = None
DRAM_CHAIN_BYTES = 64 << 20  # far beyond the last-level cache of the machines this runs on
DRAM_STEPS = 1_000_000


def dram_latency_ns() -> float:
    """One dependent load that misses every cache (a pointer chase over a random cyclic
    permutation of 64 MB; roofline.pointer_chase), ns: the memory-latency floor of a
    lookup that cannot be cached. Measured once per process (a forked cell inherits it)."""
    global _DRAM_NS
    if _DRAM_NS is None:
        from .._cext import roofline

        n = DRAM_CHAIN_BYTES // 4
        perm = np.random.default_rng(0).permutation(n).astype(np.uint32)
        chain = np.empty(n, np.uint32)
        chain[perm] = np.roll(perm, -1)
        roofline.pointer_chase(chain, DRAM_STEPS // 10)  # warm the TLB path once
        t0 = time.perf_counter()
        roofline.pointer_chase(chain, DRAM_STEPS)
        _DRAM_NS = (time.perf_counter() - t0) / DRAM_STEPS * 1e9
    return _DRAM_NS


def _timed(fn: Callable, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def load_calibration(path: str | None) -> dict | None:
    if path is None:
        default = Path(
            os.environ.get(
                "KPROXY_EMU_CALIBRATION", Path.home() / ".cache" / "kproxy-emu" / "calibration.json"
            )
        )
        if not default.exists():
            return None
        path = str(default)
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot read the calibration file ({exc})", field="--calibration", value=path
        ) from None


def predicted_sync_seconds(calibration: dict | None, mode: str, dp, update) -> dict:
    """The kernel's programming time the calibration predicts for the cell's full sync
    and its one-endpoint update (kproxy_emu.programtime.ProgramTimeModel: the sync model of
    ``calibrate --syncs`` when present): ``kernel_sync_full_s``, ``kernel_sync_update_s``;
    nothing when it predicts none for the mode."""
    from ..programtime import ProgramTimeModel

    if not calibration:
        return {}
    model = ProgramTimeModel.from_calibration(calibration)
    full = next((s for s in dp.syncs if s.full), None)
    if full is None:
        return {}
    full_s = model.predict(mode, full.lines, 0)
    update_s = model.predict(mode, update.lines, full.lines, update.rewrites)
    if full_s is None or update_s is None:
        return {}
    return {"kernel_sync_full_s": round(full_s, 4), "kernel_sync_update_s": round(update_s, 5)}


def predicted_kernel_ns(
    calibration: dict | None, mode: str, rules: float, lookups: float
) -> float | None:
    """Kernel first-packet latency the calibration predicts for this counted cost:
    base + rules x per-rule (iptables), base + lookups x per-lookup (hash modes)."""
    if not calibration:
        return None
    entry = calibration.get("modes", {}).get(mode)
    if not entry:
        return None
    base = float(entry.get("base_ns", 0.0))
    if "ns_per_rule" in entry:
        return base + rules * float(entry["ns_per_rule"])
    if "ns_per_lookup" in entry:
        return base + lookups * float(entry["ns_per_lookup"])
    return None


def predicted_proxy_ns(
    calibration: dict | None, connections: float, bytes_copied: float
) -> float | None:
    """The userspace proxy's overhead the calibration predicts for these counts (ns, in
    total): connections x ns_per_connection + bytes copied x ns_per_byte, both measured
    against a real relay (kproxy_emu.lab.relay)."""
    entry = (calibration or {}).get("modes", {}).get("userspace")
    if not entry or "ns_per_connection" not in entry or "ns_per_byte" not in entry:
        return None
    return connections * float(entry["ns_per_connection"]) + bytes_copied * float(
        entry["ns_per_byte"]
    )


def _proxy_delta(after: dict[str, int], before: dict[str, int] | None) -> dict[str, int]:
    before = before or {}
    return {k: int(v) - int(before.get(k, 0)) for k, v in after.items()}


def _proxy_replies(batch, verdicts, alive, portals, *, start: float):
    """userspace: the proxy's replies on the clients' connections (SYN-ACK from the proxy
    address the portal rules sent each flow to, a packet of the node's own), so the
    clients' next packets are conntrack hits as after a handshake; ``packets.replies``
    gives the endpoints' replies on the proxy's own connections. ``portals``: row ->
    (proxy ip, port) (``last_portals``) or the (rows, ips, ports) arrays
    (``last_portal_arrays``)."""
    from .. import packets

    if isinstance(portals, dict):
        n = len(portals)
        at = np.fromiter(portals, np.int64, n)
        ips = np.fromiter((ip for ip, _ in portals.values()), np.uint32, n)
        ports = np.fromiter((port for _, port in portals.values()), np.uint16, n)
    else:
        at, ips, ports = portals
    client = verdicts.copy()
    client["dnat_ip"] = 0
    client["dnat_port"] = 0
    client["snat_ip"] = 0
    client["snat_port"] = 0
    client["dnat_ip"][at] = ips
    client["dnat_port"][at] = ports
    rows = np.zeros(len(batch), bool)
    rows[at] = True
    rows &= alive
    rep = packets.replies(batch[rows], client[rows], start=start)
    rep["origin"] = packets.Origin.HOST
    return rep


def run_cell(mode: str, services: int, spec: BenchSpec, cluster=None) -> list[dict]:
    """Measure one mode at one size; two records (new, established)."""
    from .. import packets
    from .._cext import roofline
    from ..dataplane import Dataplane, EbpfOptions, IpvsOptions

    if cluster is None:
        cluster = spec_cluster(spec, services)
    t0 = time.perf_counter()
    mode_opts: str | IpvsOptions | EbpfOptions = mode
    if mode == "ipvs" and spec.ipvs_conn_tab_bits:
        mode_opts = IpvsOptions(conn_tab_bits=spec.ipvs_conn_tab_bits)
    if mode == "ebpf":  # bpf-lb-map-max raised to fit, as an operator of a large cluster does
        mode_opts = EbpfOptions(lb_map_max=EBPF_LB_MAP_MAX)
    dp = Dataplane(
        cluster, mode_opts, node=spec.node, cluster_cidr=spec.cluster_cidr, seed=spec.seed
    )
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dp.prepare()
    prepare_s = time.perf_counter() - t0
    full_sync = dp.syncs[-1].cost() if dp.syncs else {}

    batch = captured(dp, spec) if spec.pcap else traffic(dp, spec, spec.seed + 1)
    n = len(batch)

    def new_pass():
        dp.reset_state()
        return dp.process(batch)

    userspace = mode == "userspace"
    proxy: dict[str, dict[str, int]] = {}
    new_times, verdicts = [], None
    for _ in range(spec.repeat):
        dp.reset_state()  # a fresh node: every packet opens its flow (not timed)
        t0 = time.perf_counter()
        verdicts = dp.process(batch)
        new_times.append(time.perf_counter() - t0)
    if userspace:  # what the proxy did for the last pass (reset_state zeroes its counts)
        proxy["new"] = dict(dp.backend.proxy_stats)
    dropped = drop_reasons(dp, batch, verdicts)  # why, read off traces (not timed)
    # established: the flows that got through, after their handshake (SYN, SYN-ACK)
    alive = (verdicts["action"] == packets.Action.DNAT) | (
        verdicts["action"] == packets.Action.ACCEPT
    )
    est_times = []
    for _ in range(spec.repeat):
        first = new_pass()
        if userspace:  # the client's connection is answered by the proxy (below)
            portals = dp.backend.last_portal_arrays
        dp.process(packets.replies(batch[alive], first[alive], start=dp.clock + 0.001))
        if userspace:
            dp.process(_proxy_replies(batch, first, alive, portals, start=dp.clock + 0.001))
        follow = packets.next_packets(batch[alive], start=dp.clock + 1.0)
        before = dict(dp.backend.proxy_stats) if userspace else None
        t0 = time.perf_counter()
        est = dp.process(follow)
        est_times.append(time.perf_counter() - t0)
        if userspace:
            proxy["established"] = _proxy_delta(dp.backend.proxy_stats, before)
    hits = float(est["ct_hit"].mean())
    stages: dict[str, dict[str, float]] = {}
    if spec.profile:  # where the time goes: the same two passes, counters on (bench/profile.py)
        from . import profile

        dp.reset_state()
        first, stages["new"] = profile.profiled(dp, batch)
        if not userspace:
            dp.process(packets.replies(batch[alive], first[alive], start=dp.clock + 0.001))
            follow = packets.next_packets(batch[alive], start=dp.clock + 1.0)
            _, stages["established"] = profile.profiled(dp, follow)

    # roofline: the service frontends as packed rows, scanned and hashed
    targets = dp.packet_targets()
    scanned = roofline.linear_scan(
        np.ascontiguousarray(targets["ip"]),
        np.ascontiguousarray(targets["port"]),
        np.ascontiguousarray(targets["proto"]),
        batch,
    )
    scan_times, _ = _timed(
        lambda: roofline.linear_scan(
            np.ascontiguousarray(targets["ip"]),
            np.ascontiguousarray(targets["port"]),
            np.ascontiguousarray(targets["proto"]),
            batch,
        ),
        spec.repeat,
    )
    table = roofline.OpenAddressingTable(
        np.ascontiguousarray(targets["ip"]),
        np.ascontiguousarray(targets["port"]),
        np.ascontiguousarray(targets["proto"]),
    )
    found = np.empty(n, np.int64)
    hash_times, _ = _timed(lambda: table.probe(batch, found), spec.repeat)

    changed = one_endpoint_changed(cluster)
    t0 = time.perf_counter()
    sync = dp.update(changed)
    update_s = time.perf_counter() - t0

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    calibration = load_calibration(spec.calibration)
    kernel_sync = predicted_sync_seconds(calibration, mode, dp, sync)
    scan_ns_per_row = float(np.median(scan_times)) / max(scanned, 1) * 1e9
    hash_ns = float(np.median(hash_times)) / n * 1e9
    common = {
        "mode": mode,
        "services": services,
        "endpoints": spec.endpoints,
        "frontends": len(targets),
        "packets": n,
        "compile_s": round(compile_s, 4),
        "prepare_s": round(prepare_s, 4),
        "update_s": round(update_s, 4),
        "sync_full": full_sync,
        "sync_update": sync.cost(),
        **kernel_sync,
        "peak_rss_mb": round(peak_mb, 1),
        "roofline_scan_ns_per_rule": round(scan_ns_per_row, 3),
        "roofline_hash_ns_per_lookup": round(hash_ns, 3),
        "popularity": spec.popularity,
        "seed": spec.seed,
        "repeat": spec.repeat,
    }
    records = []
    for flow, times, v in (("new", new_times, verdicts), ("established", est_times, est)):
        ns = np.array(times) / len(v) * 1e9
        rules = v["rules"].astype(np.float64)
        probes = v["probes"].astype(np.float64)
        lookups = v["lookups"].astype(np.float64)
        by_rules = mode in ("iptables", "userspace")  # userspace: the portal rules (iptables)
        unit = "rules" if by_rules else "lookups" if mode == "ebpf" else "probes"
        cost = {"rules": rules, "lookups": lookups, "probes": probes}[unit]
        med = float(np.median(ns))
        rec = dict(common)
        rec.update(
            {
                "flow": flow,
                "ns_per_packet": round(med, 2),
                "ns_min": round(float(ns.min()), 2),
                "ns_max": round(float(ns.max()), 2),
                "mpps": round(1e3 / med, 3),
                "cost_unit": unit,
                "cost_p50": round(float(np.percentile(cost, 50)), 3),
                "cost_p99": round(float(np.percentile(cost, 99)), 3),
                "rules_mean": round(float(rules.mean()), 2),
                "probes_p50": round(float(np.percentile(probes, 50)), 3),
                "lookups_mean": round(float(lookups.mean()), 3),
                "probes_p99": round(float(np.percentile(probes, 99)), 3),
                "ct_hit_share": round(float(v["ct_hit"].mean()), 4),
                "actions": {
                    packets.Action(a).name: int(c)
                    for a, c in zip(*np.unique(v["action"], return_counts=True))
                },
            }
        )
        if flow == "new":
            rec["drop_reasons"] = dropped
        if flow in stages:
            rec["profile"] = stages[flow]
        if mode == "iptables" and flow == "new" and rules.mean() > 0:
            per_rule = med / float(rules.mean())
            rec["ns_per_rule"] = round(per_rule, 3)
            rec["roofline_ratio"] = round(per_rule / scan_ns_per_row, 2)
        if flow == "established" or mode != "iptables":
            # packets' cost in bare hash lookups of the same frontends
            rec["roofline_ratio"] = round(med / hash_ns, 2) if hash_ns else None
            rec["established_hit_share"] = round(hits, 4)
        # the cold-case floor: one DRAM miss per lookup (plus netfilter conntrack's own
        # lookup in the modes that use it; eBPF counts its CT lookups among its lookups)
        dram = dram_latency_ns()
        misses = float(lookups.mean()) + (0.0 if mode == "ebpf" else 1.0)
        rec["dram_ns"] = round(dram, 2)
        rec["dram_floor_ns"] = round(misses * dram, 1)
        rec["dram_floor_ratio"] = round(med / (misses * dram), 2)
        rec["predicted_kernel_ns"] = (
            predicted_kernel_ns(
                calibration,
                mode,
                float(rules.mean()),
                float((lookups if mode == "ebpf" else probes).mean()),
            )
            if flow == "new"
            else None
        )
        if userspace:
            counts = proxy.get(flow, {})
            conns = counts.get("connections", 0)
            relayed = counts.get("relayed", 0)
            copied = relayed * spec.userspace_payload_bytes
            total = predicted_proxy_ns(calibration, conns, copied)
            rec.update(
                {
                    "proxy_connections": conns,
                    "proxy_relayed": relayed,
                    "payload_bytes": spec.userspace_payload_bytes,
                    "proxy_bytes_copied": copied,
                    "predicted_proxy_ns": None if total is None else round(total / len(v), 2),
                }
            )
        records.append(rec)
    return records


def reference_ratio(spec: BenchSpec, services: int, packets_n: int = 300) -> dict:
    """The pure-Python reference evaluator against the compiled engine on a small case:
    ns per packet of each and their ratio (first packets of flows, no conntrack)."""
    from ..dataplane import Dataplane
    from ..dataplane.reference import Flow, ReferenceEvaluator, evaluate_new_flow

    cluster = make_cluster(services, spec.endpoints, spec.seed)
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=spec.seed, conntrack=False)
    dp.prepare()
    small = dataclasses.replace(spec, packets=max(packets_n, 100))
    batch = traffic(dp, small, spec.seed + 1)[:packets_n]
    times = []
    for _ in range(3):
        dp.reset_state()  # the node's clock back to 0: the same batch again (not timed)
        t0 = time.perf_counter()
        dp.process(batch)
        times.append(time.perf_counter() - t0)
    engine_ns = float(np.median(times)) / len(batch) * 1e9
    ev = ReferenceEvaluator(dp.tables, dp.options.node.local_ips, dp.options.family)
    flows = [Flow.from_packet(r) for r in batch]
    t0 = time.perf_counter()
    for f in flows:
        evaluate_new_flow(ev, f)
    ref_ns = (time.perf_counter() - t0) / len(flows) * 1e9
    return {
        "mode": "iptables",
        "services": services,
        "packets": len(flows),
        "engine_ns_per_packet": round(engine_ns, 1),
        "reference_ns_per_packet": round(ref_ns, 1),
        "reference_ratio": round(ref_ns / engine_ns, 1),
    }


def _cell_in_child(conn, mode, services, spec) -> None:
    try:
        conn.send(("ok", run_cell(mode, services, spec)))
    except CapacityError as exc:  # the mode cannot hold this cluster (eBPF's 16-bit IDs)
        conn.send(("skipped", str(exc)))
    except InputError as exc:  # bad input: one line, as the CLI prints it
        conn.send(("input", str(exc)))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run(spec: BenchSpec, *, progress: bool = True, isolate: bool = True) -> dict:
    """The whole sweep: {"records": [...], "disruption": [...], "reference": {...},
    "machine": {...}}."""
    from tqdm import tqdm

    from . import memory

    spec.validate()
    dram_latency_ns()  # once, before the cells fork: each inherits the figure
    if spec.files:  # one cluster, the given one: its size is the cells' "services"
        spec = dataclasses.replace(spec, services=[len(spec_cluster(spec, 0).services)])
    if spec.pcap:  # a capture that cannot be read fails here, before any cell
        from .. import pcap

        pcap.read(spec.pcap)
    cells = [(m, n) for n in spec.services for m in spec.modes]
    machine = machine_info()
    records: list[dict] = []
    skipped: list[dict] = []  # cells a mode cannot hold, with the reason
    bar = tqdm(cells, desc="bench", unit="cell", disable=not progress, leave=False)
    for mode, services in bar:
        bar.set_postfix_str(f"{mode} {services} services")
        too_big = memory.refusal(mode, services, spec.endpoints, memory.available_mb())
        if too_big is not None:  # refused with the estimate rather than killed
            skipped.append({"mode": mode, "services": services, "reason": too_big})
            continue
        if isolate:
            ctx = multiprocessing.get_context("fork")
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_cell_in_child, args=(child, mode, services, spec))
            proc.start()
            child.close()
            try:
                status, payload = parent.recv()
            except EOFError:
                status, payload = "error", f"the measuring process died (exit {proc.exitcode})"
            proc.join()
            if status == "skipped":
                skipped.append({"mode": mode, "services": services, "reason": payload})
                continue
            if status == "input":
                raise InputError(payload)
            if status != "ok":
                raise KproxyError(f"bench {mode} at {services} services failed: {payload}")
            records.extend(annotate(payload, cell_params(mode, services, spec), machine))
        else:
            try:
                cell = run_cell(mode, services, spec)
                records.extend(annotate(cell, cell_params(mode, services, spec), machine))
            except CapacityError as exc:
                skipped.append({"mode": mode, "services": services, "reason": str(exc)})
    # the Python evaluator takes ~10 µs per rule walked: keep its case small
    reference = reference_ratio(spec, min(min(spec.services), REFERENCE_SERVICES))
    moved: list[dict] = []
    # one endpoint is removed (2 at least); on a synthetic cluster of the sweep's shape
    if spec.disruption and spec.endpoints >= 2 and not spec.files:
        from . import disruption

        moved = disruption.run(spec.modes, endpoints=spec.endpoints, seed=spec.seed)
    return {
        "records": records,
        "skipped": skipped,
        "disruption": moved,
        "reference": reference,
        "machine": machine,
        "spec": dataclasses.asdict(spec),
    }


def machine_info() -> dict:
    """The machine a record was measured on: CPU model, cores, kernel, Python, the
    package's version and git revision (None outside a git checkout; ``+dirty`` when
    the tree has uncommitted changes)."""
    import platform

    from .._version import __version__

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "kproxy_emu": __version__,
        "git_revision": git_revision(),
        "hostname": platform.node(),
    }


def git_revision() -> str | None:
    """The git revision of the package's checkout (``+dirty`` with uncommitted changes),
    None when it is not in a git work tree or git is missing."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# the parameters that make a cell (a BenchSpec's scalar fields and the cell's mode and size)
CELL_PARAMS = (
    "mode",
    "services",
    "endpoints",
    "packets",
    "new_flow_share",
    "popularity",
    "seed",
    "repeat",
    "origin_mix",
    "calibration",
    "ipvs_conn_tab_bits",
    "userspace_payload_bytes",
)


def cell_params(mode: str, services: int, spec: BenchSpec) -> dict:
    """The parameters of one cell (mode, size and the spec's options), JSON-ready."""
    values = dataclasses.asdict(spec)
    values.update(mode=mode, services=services)
    return {k: values[k] for k in CELL_PARAMS}


def cell_key(params: dict) -> str:
    """A cell's identity: the first 16 hex digits of the SHA-256 of its parameters as
    canonical JSON (sorted keys)."""
    import hashlib

    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def annotate(records: list[dict], params: dict, machine: dict) -> list[dict]:
    """Every record of a cell gets the cell's key, its parameters and the machine."""
    key = cell_key(params)
    for rec in records:
        rec["cell"] = key
        rec["params"] = dict(params)
        rec["machine"] = dict(machine)
    return records
