"""Stub for the compiled kproxy_emu._cext.userspace (source: cext/userspace.pyx): the
userspace mode's proxy hop and the proxy process's state."""

import numpy as np
import numpy.typing as npt

HOW_NONE: int
HOW_ROUND_ROBIN: int
HOW_AFFINITY: int
HOW_CONNECTION: int
HOW_SESSION: int
HOP_OK: int
HOP_NO_MEMORY: int
HOP_BAD_ENDPOINT: int
RECORD_DTYPE: np.dtype[np.void]

class Proxy:
    """The userspace proxy's state (balancer, connections, UDP clients, connect() ports,
    counts) and its per-row hop."""

    last_affinity_hit: bool
    def reset(self, words: list[int], pos: int) -> None:
        """No flows, no sessions, zero counts; the port stream at this MT state."""
    def rng_state(self) -> tuple[list[int], int]: ...
    def load_services(
        self,
        present: npt.ArrayLike,
        sticky: npt.ArrayLike,
        ttl: npt.ArrayLike,
        index: npt.ArrayLike,
        ep_off: npt.ArrayLike,
        n_ep: npt.ArrayLike,
        ep_slots: npt.ArrayLike,
        timeout: npt.ArrayLike,
    ) -> None: ...
    def set_timeouts(self, timeout: npt.ArrayLike) -> None: ...
    def load_affinity(
        self,
        sid: npt.ArrayLike,
        client: npt.ArrayLike,
        slot: npt.ArrayLike,
        last_used: npt.ArrayLike,
        foreign: npt.ArrayLike,
    ) -> None: ...
    def set_slots(
        self, ip: npt.ArrayLike, port: npt.ArrayLike, bad: npt.ArrayLike, dp_index: npt.ArrayLike
    ) -> None: ...
    @property
    def stats(self) -> npt.NDArray[np.int64]:
        """connections, relayed, relay_rules, no_endpoint (writable)."""
    @property
    def slot_index(self) -> npt.NDArray[np.int32]: ...
    @property
    def indices(self) -> npt.NDArray[np.int32]: ...
    def take_dirty(self) -> npt.NDArray[np.intp]: ...
    def affinity(
        self,
    ) -> tuple[
        npt.NDArray[np.int32],
        npt.NDArray[np.uint32],
        npt.NDArray[np.int32],
        npt.NDArray[np.float64],
        npt.NDArray[np.int32],
    ]: ...
    @property
    def flows(self) -> tuple[int, int]: ...
    def snapshot(self) -> object: ...
    def restore(self, snap: object) -> None: ...
    def hop(
        self,
        packets: npt.NDArray[np.void],
        out: npt.NDArray[np.void],
        proxy_ip: int,
        proxy_ip2: int,
        node_ip: int,
        listen: npt.NDArray[np.int32],
        n_endpoints: int,
        records: npt.NDArray[np.void],
        second: npt.NDArray[np.void],
        second_rows: npt.NDArray[np.int64],
        new_slots: npt.NDArray[np.int32],
    ) -> tuple[int, int, int, int]:
        """(records, second packets, new slots, error code)."""
