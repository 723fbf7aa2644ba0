"""The eBPF mode's maps (netfilter/bpfmaps.py) packed for the compiled service lookup
(``kproxy_emu._cext.ebpflb.LbTable``): frontends as columns, slots and Maglev rows as
flat arrays, backend IDs and affinity-match entries as key arrays. IPv4."""

from __future__ import annotations

import ipaddress

import numpy as np
import numpy.typing as npt

from .. import maglev
from .._cext.ebpflb import LbTable
from ..netfilter import bpfmaps as B


def lower(
    maps: B.BpfMaps,
    *,
    algorithm: str = "random",
    maglev_table_size: int = maglev.DEFAULT_TABLE_SIZE,
    seed: str = maglev.DEFAULT_HASH_SEED,
    affinity_entries: int = 65536,
) -> LbTable:
    """An LbTable over ``maps`` (the node's algorithm and Maglev settings as given)."""
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
    return LbTable(
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
        be_ids=np.array(sorted(maps.backends), np.uint32),
        match=match,
        m=maglev_table_size,
        jhash_seed=maglev.seeds(seed).jhash0,
        use_maglev=algorithm == "maglev",
        capacity=affinity_entries,
    )
