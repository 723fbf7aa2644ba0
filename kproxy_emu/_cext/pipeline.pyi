"""Stub for the compiled kproxy_emu._cext.pipeline (source: cext/pipeline.pyx; C-level
contract in kproxy_emu/_cext/pipeline.pxd): the one packet pipeline every mode runs."""

from typing import Any

import numpy as np
import numpy.typing as npt

# conntrack is compiled into this module (cext/conntrack.pxi): the same objects
from kproxy_emu._cext.conntrack import *  # noqa: F403

from .conntrack import ConntrackTable

STEP_KINDS: dict[str, int]
HOOKS: tuple[str, ...]
STEP_DTYPE: np.dtype[np.void]
DEFAULT_SEED: int
PROF_CONNTRACK: int
PROF_HOOKS: int
PROF_POLICY: int
PROF_NAT: int
PROF_VERDICT: int
PROF_TOTAL: int
PROF_PACKETS: int
PROF_SLOTS: int

def ticks() -> int:
    """The profile clock (the TSC on x86, else nanoseconds)."""

def tick_cost(n: int = 10000) -> int:
    """Median ticks between two back-to-back clock reads."""

class PolicyStage:
    """Base of the NetworkPolicy stages (netpolicy.IdentityPolicy, chains.ChainPolicy);
    alone it allows everything."""

    @property
    def checked(self) -> int: ...
    @property
    def egress_drops(self) -> int: ...
    @property
    def ingress_drops(self) -> int: ...
    @property
    def counters(self) -> tuple[int, int, int]:
        """(checked, egress_drops, ingress_drops)."""
    @counters.setter
    def counters(self, value: tuple[int, int, int]) -> None: ...
    def snapshot(self) -> tuple[Any, ...]:
        """What packets change (the counters), for ``restore``."""
    def restore(self, snap: tuple[Any, ...]) -> None: ...

class Engine:
    """Base of the mode engines (chains.ChainEngine, nftmaps.NftEngine)."""

    policy: PolicyStage | None
    @property
    def masquerade_ip(self) -> int: ...
    def __init__(self, local_ips: npt.ArrayLike, masquerade_ip: int) -> None: ...
    def set_profile(self, counters: npt.NDArray[np.uint64] | None) -> None:
        """Add ticks per stage (PROF_*) to ``counters`` in later runs; None stops."""

class Rng:
    """The node's seeded random stream (xorshift64*)."""

    def __init__(self, seed: int = 0) -> None: ...
    @property
    def state(self) -> int: ...
    @state.setter
    def state(self, value: int) -> None: ...

class Recorder:
    """What a traced packet did: steps, branch draws, conntrack's view."""

    def __init__(self, capacity: int = 65536) -> None: ...
    def clear(self) -> None: ...
    def force(self, choices: list[int] | None) -> None:
        """Draw k takes choices[k] (the first possible outcome after them); None: the
        stream's own draws."""
    @property
    def steps(self) -> npt.NDArray[np.void]: ...
    @property
    def steps_taken(self) -> int: ...
    @property
    def draws(self) -> list[tuple[str, int, int, int]]:
        """(kind, outcomes, threshold, chosen) per branch draw met."""
    @property
    def draws_truncated(self) -> bool: ...
    @property
    def lookups(self) -> int: ...
    @property
    def conntrack(self) -> tuple[int, int, bool, int]:
        """(ctstate bits, direction or -1, hit, conntrack probes)."""

def run(
    engine: Engine,
    packets: npt.NDArray[np.void],
    out: npt.NDArray[np.void],
    conntrack: ConntrackTable | None = None,
    rng: Rng | None = None,
    recorder: Recorder | None = None,
    policy: PolicyStage | None = None,
) -> None:
    """Every packet through conntrack and the node's hooks, in order."""
