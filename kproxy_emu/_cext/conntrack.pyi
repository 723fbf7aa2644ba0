"""Stub for kproxy_emu._cext.conntrack (compiled into kproxy_emu._cext.pipeline from
cext/conntrack.pxi). Pure-Python twin: kproxy_emu.dataplane.conntrack_ref."""

import numpy as np
import numpy.typing as npt

DIR_ORIGINAL: int
DIR_REPLY: int
STATE_INVALID: int
STATE_ESTABLISHED: int
STATE_RELATED: int
STATE_NEW: int
STATE_UNTRACKED: int
STATE_SNAT: int
STATE_DNAT: int
STATUS_SEEN_REPLY: int
STATUS_ASSURED: int
STATUS_CONFIRMED: int
STATUS_SRC_NAT: int
STATUS_DST_NAT: int
STATUS_SRC_NAT_DONE: int
STATUS_DST_NAT_DONE: int
ERR_FULL: int
ERR_INVALID: int
ERR_CLASH: int
EVICTION_RANGE: int
TCP_STATE_NAMES: tuple[str, ...]
SCTP_STATE_NAMES: dict[int, str]
DEFAULT_TIMEOUTS: dict[str, float]
KUBE_PROXY_TIMEOUTS: dict[str, float]
ENTRY_DTYPE: np.dtype[np.void]
STATS_KEYS: tuple[str, ...]

def tcp_transition(dir: int, index: int, old_state: int) -> int:
    """tcp_conntracks[dir][index][old_state] (10: invalid, 11: ignore)."""

def tcp_flag_index(flags: int) -> int:
    """get_conntrack_index for a tcp_flags byte."""

def tuple_hash(
    src_ip: int, src_port: int, dst_ip: int, dst_port: int, proto: int, seed: int
) -> int:
    """The 32-bit seeded tuple hash."""

class ConntrackTable:
    timeouts: dict[str, float]
    seed_value: int
    def __init__(
        self,
        max_entries: int,
        seed: int,
        *,
        buckets: int | None = None,
        tcp_loose: bool = True,
        **timeouts: float,
    ) -> None: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def buckets(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def tcp_loose(self) -> bool: ...
    def snapshot(self) -> tuple[object, ...]:
        """The table's whole state, for restore."""
    def restore(self, snap: tuple[object, ...]) -> None:
        """Back to the snapshot's state (ValueError: another table's snapshot)."""
    def prefault(self) -> None:
        """Map the unused entries' pages now (new flows pay no page fault)."""
    def __len__(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def lookup_batch(
        self,
        packets: npt.NDArray[np.void],
        out_state: npt.NDArray[np.uint32],
        out_entry: npt.NDArray[np.int32],
        out_dir: npt.NDArray[np.int8],
        out_probes: npt.NDArray[np.uint32] | None = None,
        *,
        update: bool = True,
    ) -> int:
        """ctstate bits, entry (-1 none), direction (-1 none) per packet; total probes."""
    def track_batch(
        self,
        packets: npt.NDArray[np.void],
        verdicts: npt.NDArray[np.void],
        out_state: npt.NDArray[np.uint32] | None = None,
        out_entry: npt.NDArray[np.int32] | None = None,
        out_dir: npt.NDArray[np.int8] | None = None,
        marks: npt.NDArray[np.uint32] | None = None,
    ) -> int:
        """Lookup + (hit: stored NAT into the verdict) / (miss: create + confirm with the
        verdict's NAT); total probes."""
    def lookup(
        self, packets: npt.NDArray[np.void], i: int = 0, *, update: bool = True
    ) -> tuple[int, int, int, int]:
        """(state, entry, dir, probes) for packets[i]."""
    def create(self, packets: npt.NDArray[np.void], i: int = 0) -> int:
        """Unconfirmed entry index, ERR_FULL or ERR_INVALID."""
    def confirm(
        self,
        entry: int,
        *,
        dnat_ip: int = 0,
        dnat_port: int = 0,
        snat_ip: int = 0,
        snat_port: int = 0,
        endpoint: int = -1,
        mark: int = 0,
        now: float = 0.0,
    ) -> tuple[int, int]:
        """(entry or ERR_CLASH, probes)."""
    def abort(self, entry: int) -> None: ...
    def update(self, entry: int, dir: int, packets: npt.NDArray[np.void], i: int = 0) -> int:
        """STATE_NEW / STATE_ESTABLISHED, STATE_INVALID, or -1 (reopened: entry gone)."""
    def translate(self, entry: int, dir: int) -> tuple[int, int, int, int]:
        """(src_ip, src_port, dst_ip, dst_port) after NAT for a packet in direction dir."""
    def expire(self, now: float) -> int: ...
    def entries(self) -> npt.NDArray[np.void]: ...
    def chain_lengths(self) -> npt.NDArray[np.int32]: ...
