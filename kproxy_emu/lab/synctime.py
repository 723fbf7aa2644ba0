"""The kernel's programming time for kube-proxy's syncs, measured in the lab.

``measure(n, mode)``: the calibration's kube-proxy-shaped cluster of ``n`` services is
loaded into a fresh lab node (the full sync: iptables-restore / ``nft -f`` into empty
tables), then the syncs the emulator computes for single changes are loaded on top of it,
as kube-proxy loads them (``iptables-restore --noflush``; ``nft -f`` of the transaction):
one endpoint added to a service, one removed, one service added with its endpoints, one
deleted; each change ``repeats`` times on different services. Every timing keeps the
sync's text lines and the lines of the ruleset already loaded (the full sync's).
``kproxy_emu.programtime.SyncTimeModel`` is fitted to them. IPVS is not in this kernel:
its netlink syncs are not measured.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..programtime import CHANGES, SyncTiming

ADDED_ENDPOINT_BASE = "10.250."  # addresses the synthetic clusters never use


def _changed(cluster, kind: str, k: int, seed: int):
    """A copy of ``cluster`` with change ``kind`` made to the ``k``-th chosen service."""
    from .. import synth
    from ..model.objects import SERVICE_NAME_LABEL

    keys = sorted(cluster.services)
    rng = np.random.default_rng([seed, k, 0x5CED])
    new = dataclasses.replace(
        cluster,
        services=dict(cluster.services),
        endpoint_slices=dict(cluster.endpoint_slices),
    )
    slices = cluster.slices_by_service()
    if kind == "service-added":
        extra = synth.cluster(1, endpoints=3, nodes=3, seed=seed + 1000 + k)
        for skey, svc in extra.services.items():
            name = (skey[0], f"added-{k}-{skey[1]}")
            ip = f"172.31.{k // 250}.{k % 250 + 1}"
            new.services[name] = dataclasses.replace(
                svc, name=name[1], cluster_ip=ip, cluster_ips=[ip]
            )
            for sl in extra.slices_by_service().get(skey, []):
                sk = sl.key
                labels = {**sl.labels, SERVICE_NAME_LABEL: name[1]}
                new.endpoint_slices[(sk[0], f"added-{k}-{sk[1]}")] = dataclasses.replace(
                    sl, name=f"added-{k}-{sl.name}", labels=labels
                )
        return new
    key = keys[int(rng.integers(len(keys)))]
    if kind == "service-deleted":
        del new.services[key]
        for sl in slices.get(key, []):
            del new.endpoint_slices[sl.key]
        return new
    sl = slices[key][0]
    sk = sl.key
    eps = list(sl.endpoints)
    if kind == "endpoint-removed":
        eps.pop(int(rng.integers(len(eps))))
    else:
        address = f"{ADDED_ENDPOINT_BASE}{k // 250}.{k % 250 + 1}"
        eps.append(dataclasses.replace(eps[0], addresses=[address], hostname="", target_ref=None))
    new.endpoint_slices[sk] = dataclasses.replace(sl, endpoints=eps)
    return new


def measure(
    n: int, mode: str = "iptables", *, seed: int = 0, repeats: int = 3, backend: str = "nft"
) -> list[SyncTiming]:
    """The full load and ``repeats`` syncs of each of CHANGES at ``n`` services."""
    from .calibrate import _shaped_cluster
    from .load import RESTORE, load_iptables, load_nftables
    from .node import lab_dataplane
    from .session import NodeLab

    if n < 1:
        raise InputError("must be >= 1", field="--services", value=n)
    cluster = _shaped_cluster(n, seed)
    dp = lab_dataplane(cluster, mode, seed=seed)
    tool = RESTORE[backend] if mode == "iptables" else "nft -f"
    out: list[SyncTiming] = []
    with NodeLab(dp, backend=backend, only_endpoints=set()) as lab:
        assert lab.load_result is not None and lab.lab is not None
        loaded = lab.load_result.lines
        out.append(SyncTiming(mode, tool, n, "full", loaded, 0, lab.load_result.seconds))
        for k, kind in enumerate(CHANGES * repeats):
            sync = dp.update(_changed(dp.cluster, kind, k, seed))
            if not sync.ok or not sync.text:
                raise InputError(f"the {kind} sync wrote nothing", field="mode", value=mode)
            if mode == "iptables":
                res = load_iptables(lab.lab, sync.text, noflush=True, backend=backend)
            else:
                res = load_nftables(lab.lab, sync.text)
            out.append(
                SyncTiming(mode, tool, n, kind, sync.lines, loaded, res.seconds, sync.rewrites)
            )
    return out


def measure_all(
    services: Sequence[int],
    modes: Sequence[str] = ("iptables", "nftables"),
    *,
    seed: int = 0,
    repeats: int = 3,
    backend: str = "nft",
    progress=None,
) -> list[SyncTiming]:
    out: list[SyncTiming] = []
    for mode in modes:
        for n in services:
            start = time.perf_counter()
            got = measure(int(n), mode, seed=seed, repeats=repeats, backend=backend)
            out += got
            if progress:
                progress(mode, int(n), got, time.perf_counter() - start)
    return out
