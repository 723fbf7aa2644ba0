"""The eBPF mode's maps (netfilter/bpfmaps.py) packed for the compiled service lookup
(``kproxy_emu._cext.ebpflb.LbTable``): frontends as columns, slots and Maglev rows as
flat arrays, backend IDs and affinity-match entries as key arrays. IPv4."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import maglev
from .._cext.ebpflb import LbTable, LruMap
from ..netfilter import bpfmaps as B


@dataclass(eq=False)
class LoweredEbpf:
    """The engine's table and what traces name its rows by: the frontends in the
    table's order and the maps it was built from."""

    table: LbTable
    frontends: list[tuple[B.ServiceKey, B.ServiceValue]]
    maps: B.BpfMaps


def _u32(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


def lower(maps: B.BpfMaps, **options: Any) -> LbTable:
    """An LbTable over ``maps`` (``lower_full``'s options: the node's algorithm and
    Maglev settings, its affinity map, the endpoint table's indices, its local
    backends)."""
    return lower_full(maps, **options).table


def lower_full(
    maps: B.BpfMaps,
    *,
    algorithm: str = "random",
    maglev_table_size: int = maglev.DEFAULT_TABLE_SIZE,
    seed: str = maglev.DEFAULT_HASH_SEED,
    affinity_entries: int = 65536,
    affinity: LruMap | None = None,
    endpoint_index: Callable[[str], int] | None = None,
    local: Collection[tuple[str, int]] = (),
) -> LoweredEbpf:
    """An LbTable over ``maps`` with the frontends in its order, for traces.
    ``affinity``: the node's affinity map (kept across syncs); ``endpoint_index``: the
    endpoint table's index of an "ip:port" backend; ``local``: the (ip, port) backends
    running on this node."""
    masters = sorted(maps.frontends().items(), key=lambda kv: kv[1].rev_nat_index)
    n = len(masters)
    fe_addr = np.empty(n, np.uint32)
    fe_port = np.empty(n, np.uint16)
    fe_proto = np.empty(n, np.uint8)
    fe_scope = np.empty(n, np.uint8)
    fe_count = np.empty(n, np.uint32)
    fe_flags = np.empty(n, np.uint32)
    fe_rev_nat = np.empty(n, np.uint32)
    fe_timeout = np.empty(n, np.uint32)
    fe_first = np.empty(n, np.int32)
    fe_lut = np.full(n, -1, np.int32)
    fe_sr_first = np.zeros(n, np.int32)
    fe_sr_count = np.zeros(n, np.int32)
    ranges: dict[int, list[str]] = {}
    for rid, cidr in maps.source_ranges:
        ranges.setdefault(rid, []).append(cidr)
    sr_net: list[int] = []
    sr_mask: list[int] = []
    slots: list[int] = []
    lut_rows: list[npt.NDArray[np.uint32]] = []
    for i, (key, v) in enumerate(masters):
        fe_addr[i] = int(ipaddress.IPv4Address(key.address))
        fe_port[i] = key.port
        fe_proto[i] = key.proto
        fe_scope[i] = key.scope
        fe_count[i] = v.count
        fe_flags[i] = v.flags
        fe_rev_nat[i] = v.rev_nat_index
        fe_timeout[i] = v.affinity_timeout
        fe_first[i] = len(slots)
        slots += maps.slots(key)
        fe_sr_first[i] = len(sr_net)
        for cidr in sorted(ranges.get(v.rev_nat_index, ())):
            net = ipaddress.ip_network(cidr, strict=False)
            if net.version == 4:
                sr_net.append(int(net.network_address))
                sr_mask.append(int(net.netmask))
        fe_sr_count[i] = len(sr_net) - fe_sr_first[i]
        lut = maps.maglev.get(v.rev_nat_index)
        if lut is not None:
            fe_lut[i] = len(lut_rows)
            lut_rows.append(lut)
    luts = (
        np.stack(lut_rows).astype(np.uint32)
        if lut_rows
        else np.zeros((0, maglev_table_size), np.uint32)
    )
    match = np.array(sorted((rid << 32) | bid for rid, bid in maps.affinity_match), dtype=np.uint64)
    be_ids = sorted(maps.backends)
    nb = len(be_ids)
    be_addr = np.zeros(nb, np.uint32)
    be_port = np.zeros(nb, np.uint16)
    be_endpoint = np.full(nb, -1, np.int32)
    be_local = np.zeros(nb, np.uint8)
    local_set = set(local)
    for i, bid in enumerate(be_ids):
        be = maps.backends[bid]
        if ":" in be.address:
            continue  # IPv6 backends: the IPv4 datapath never picks them
        be_addr[i] = _u32(be.address)
        be_port[i] = be.port
        if endpoint_index is not None:
            be_endpoint[i] = endpoint_index(f"{be.address}:{be.port}")
        be_local[i] = (be.address, be.port) in local_set
    rn_addr = np.zeros(max(maps.rev_nat, default=0) + 1, np.uint32)  # 0: no entry
    rn_port = np.zeros(len(rn_addr), np.uint16)
    for rid, rn in maps.rev_nat.items():
        if ":" not in rn.address:
            rn_addr[rid] = _u32(rn.address)
            rn_port[rid] = rn.port
    table = LbTable(
        fe_addr,
        fe_port,
        fe_proto,
        fe_scope,
        fe_count,
        fe_flags,
        fe_rev_nat,
        fe_timeout,
        fe_first,
        fe_lut,
        slot_be=np.array(slots, np.uint32),
        luts=luts,
        be_ids=np.array(be_ids, np.uint32),
        match=match,
        m=maglev_table_size,
        jhash_seed=maglev.seeds(seed).jhash0,
        use_maglev=algorithm == "maglev",
        capacity=affinity_entries,
        affinity=affinity,
        be_addr=be_addr,
        be_port=be_port,
        be_endpoint=be_endpoint,
        be_local=be_local,
        rn_addr=rn_addr,
        rn_port=rn_port,
        fe_sr_first=fe_sr_first,
        fe_sr_count=fe_sr_count,
        sr_net=np.array(sr_net, np.uint32),
        sr_mask=np.array(sr_mask, np.uint32),
    )
    return LoweredEbpf(table, masters, maps)
