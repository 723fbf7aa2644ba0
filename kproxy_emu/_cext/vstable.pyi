"""Stub for kproxy_emu._cext.vstable (compiled into kproxy_emu._cext.chains from
cext/vstable.pxi, cext/ipvs_core.pxi and cext/ipset_core.pxi; C declarations in
kproxy_emu/_cext/chains.pxd). Pure-Python twin: kproxy_emu.dataplane.ipvs_reference."""

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

SCHEDULERS: tuple[str, ...]
SERVICE_DTYPE: np.dtype[np.void]
DEST_DTYPE: np.dtype[np.void]
DEST_STATS_DTYPE: np.dtype[np.void]
CONN_DTYPE: np.dtype[np.void]
TCP_STATE_NAMES: tuple[str, ...]
DEFAULT_TIMEOUTS: dict[str, float]
MH_PRIMES: tuple[int, ...]
FLAG_PERSISTENT: int
FLAG_SCHED1: int
FLAG_SCHED2: int
RESULT_PASS: int
RESULT_DNAT: int
RESULT_DROP: int
RESULT_REJECT: int
RESULT_NOSCHED: int
RESULT_SNAT: int
STATS_KEYS: tuple[str, ...]
IPSET_TYPES: dict[str, int]

def scheduler_code(name: str) -> int: ...
def svc_hash(proto: int, addr: int, port: int, rnd: int, bits: int) -> int:
    """ip_vs_svc_hashkey with a 2^bits table."""

def conn_hash(proto: int, caddr: int, cport: int, rnd: int, bits: int) -> int:
    """jhash_3words(caddr, cport, proto, rnd) & mask (ip_vs_conn_hashkey)."""

def sh_hash(addr: int, port: int, offset: int = 0) -> int: ...
def dh_hash(addr: int) -> int: ...
def mh_hash(addr: int, port: int, which: int = 1, offset: int = 0) -> int: ...
def tcp_transition(output: bool, idx: int, state: int) -> int: ...
def table_seeds(seed: int) -> tuple[int, int]: ...
def parse_dirs(text: str) -> int: ...
def parse_entry(set_type: str, entry: str) -> tuple[int, int, int]: ...

class VirtualServerTable:
    scheduler: str
    seed: int
    def __init__(
        self,
        services: npt.ArrayLike,
        dests: npt.ArrayLike,
        scheduler: str = "rr",
        seed: int = 0,
        *,
        svc_bits: int | None = None,
        conn_bits: int = 12,
        max_conns: int = 262144,
        mh_tab_index: int = 12,
        timeouts: Mapping[str, float] | None = None,
        expire_nodest_conn: bool = True,
        expire_quiescent_template: bool = True,
        conn_reuse_mode: int = 1,
    ) -> None: ...
    def snapshot(self, schedulers: bool = False) -> tuple[object, ...]:
        """Connections, templates, destination counters and scheduler state (with
        ``schedulers``: the sh/dh/mh tables too), for restore."""
    def restore(self, snap: tuple[object, ...]) -> None: ...
    def add_service(
        self, proto: int, addr: int, port: int, flags: int = 0, timeout: int = 0
    ) -> int:
        """ip_vs_add_service (hashed at its chain head)."""
    def edit_service(self, svc: int, flags: int, timeout: int) -> None:
        """ip_vs_edit_service: new flags and persistence timeout."""
    def service_flags(self, svc: int) -> tuple[int, int]: ...
    def del_service(self, svc: int) -> None:
        """ip_vs_del_service: unhashed, destinations to the trash."""
    def add_dest(self, svc: int, addr: int, port: int, weight: int = 1, endpoint: int = -1) -> int:
        """ip_vs_add_dest: a new destination, or this service's deleted one revived."""
    def edit_dest(self, dest: int, weight: int) -> None: ...
    def del_dest(self, dest: int) -> None: ...
    def find_service(self, proto: int, addr: int, port: int) -> int: ...
    def service_dests(self, svc: int) -> list[int]: ...
    def sched_table(self, svc: int) -> npt.NDArray[np.int32]: ...
    @property
    def num_services(self) -> int: ...
    @property
    def num_dests(self) -> int: ...
    @property
    def svc_bits(self) -> int: ...
    @property
    def mh_size(self) -> int: ...
    def __len__(self) -> int: ...
    def process(
        self, packets: np.ndarray, out: np.ndarray, now: float | None = None
    ) -> npt.NDArray[np.uint8]:
        """ip_vs_in per packet in order; verdicts written to ``out``; RESULT_* codes."""
    def process_reply(
        self, packets: np.ndarray, out: np.ndarray, now: float | None = None
    ) -> npt.NDArray[np.uint8]:
        """ip_vs_out per reply packet: snat_ip/snat_port back to the virtual address."""
    def expire(self, now: float) -> int: ...
    def dest_connections(self, dest: int) -> int:
        """ActiveConn + InActConn of one real server now."""
    def dest_stats(self) -> np.ndarray: ...
    def connections(self) -> np.ndarray: ...
    def stats(self) -> dict[str, int]: ...

class IPSet:
    name: str
    type: str
    def __init__(
        self, name: str, set_type: str, entries: Iterable[str] = (), seed: int = 0
    ) -> None: ...
    def __len__(self) -> int: ...
    @property
    def entries(self) -> list[str]: ...
    def test(self, packets: np.ndarray, dirs: str | int) -> npt.NDArray[np.bool_]: ...
