"""Stub for the compiled kproxy_emu._cext.chains (source: cext/chains.pyx)."""

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

# vstable is compiled into this module (cext/vstable.pxi): the same objects
from kproxy_emu._cext.vstable import *  # noqa: F403
from kproxy_emu._cext.vstable import IPSet, VirtualServerTable

from .pipeline import Engine, PolicyStage

POLICY_MARK: int
POLICY_MARK_MASK: int
POLICY_RULE_MAX: int

def layout() -> dict[str, dict[str, Any]]: ...

class ChainEngine(Engine):
    """The iptables hooks of one node (with ``ipvs``: IPVS at LOCAL_IN / LOCAL_OUT and
    ip_vs_out for replies), for pipeline.run. Checks every index it follows (ValueError)."""

    @property
    def nth_counters(self) -> npt.NDArray[np.uint32]: ...
    @property
    def recent(
        self,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64], npt.NDArray[np.uint32]] | None: ...
    @property
    def sets(self) -> tuple[IPSet, ...]: ...
    @property
    def local_set(self) -> IPSet | None: ...
    @property
    def ipvs(self) -> VirtualServerTable | None: ...
    def __init__(
        self,
        rules: npt.NDArray[np.void],
        hot: npt.NDArray[np.void],
        chains: npt.NDArray[np.void],
        hooks: npt.NDArray[np.int32],
        local_ips: npt.ArrayLike,
        masquerade_ip: int,
        *,
        port_ranges: npt.NDArray[np.uint16] | None = None,
        nth_counters: npt.NDArray[np.uint32] | None = None,
        recent: tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64], npt.NDArray[np.uint32]]
        | None = None,
        sets: Iterable[IPSet] = (),
        local_set: IPSet | None = None,
        ipvs_words: npt.NDArray[np.uint32] | None = None,
        ipvs: VirtualServerTable | None = None,
    ) -> None: ...
    def snapshot(self) -> tuple[object, ...]:
        """The per-rule state and the IPVS table's, for restore."""
    def restore(self, snap: tuple[object, ...]) -> None: ...

class ChainPolicy(PolicyStage):
    """NetworkPolicy as iptables chains walked by the chain VM: the egress then the ingress
    dispatch chain (kproxy_emu/dataplane/policy_chains.py lowers them)."""

    @property
    def sets(self) -> tuple[IPSet, ...]: ...
    def __init__(
        self,
        rules: npt.NDArray[np.void],
        hot: npt.NDArray[np.void],
        chains: npt.NDArray[np.void],
        port_ranges: npt.NDArray[np.uint16],
        sets: Iterable[IPSet],
        egress: int,
        ingress: int,
    ) -> None: ...
