"""Stub for the compiled kproxy_emu._cext.packetio (source: cext/packetio.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

E_OK: int
E_EMPTY: int
E_PROTO: int
E_ADDR: int
E_OCTET: int
E_PORT: int
E_PORT_RANGE: int
E_ARROW: int
E_TOKEN: int
E_FLAGS: int
E_ORIGIN: int
E_IPV6: int
E_ICMP_PORT: int
E_FLAGS_PROTO: int
E_DUPLICATE: int
E_CAPACITY: int

def struct_layout() -> dict[str, dict[str, Any]]:
    """{"packet_t"|"verdict_t"|"target_t": {"itemsize": int, "fields": {name: offset},
    "sizes": {name: size}}} as the C compiler laid the structs out."""

def reset_verdicts(out: npt.NDArray[np.void]) -> None: ...

ROW_OK: int
ROW_TS_NOT_FINITE: int
ROW_TS_BEFORE_CLOCK: int
ROW_TS_DECREASES: int
ROW_FAMILY: int
ROW_ORIGIN: int

def check_rows(packets: npt.NDArray[np.void], clock: float) -> tuple[int, int, bool]:
    """(index, ROW_*, any ORIGIN_AUTO row): the first row the pipeline cannot take, or
    (-1, ROW_OK, auto)."""

def _selftest_write(packets: npt.NDArray[np.void], out: npt.NDArray[np.void]) -> int: ...
def parse_packets(
    buf: bytes | bytearray | memoryview,
    out: npt.NDArray[np.void],
    default_origin: int = 255,
    skip_blank: bool = False,
) -> tuple[int, int, int, int, int, int]:
    """(count, err, line, column, line_start, line_end); err 0 when all lines parsed."""

def parse_ipv4_lines(
    buf: bytes | bytearray | memoryview, out: npt.NDArray[np.uint32]
) -> tuple[int, int, int]:
    """(count, err, bad_index); err 0 when exactly out.shape[0] addresses parsed."""

def format_ipv4(ips: npt.NDArray[np.uint32], out: npt.NDArray[np.uint32]) -> None: ...
def format_packets(packets: npt.NDArray[np.void]) -> bytes: ...
