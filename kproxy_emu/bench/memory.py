"""The bench's memory estimate: a cell predicted not to fit in the memory available is
refused with the estimate (reported as skipped) instead of being killed by the kernel.

Peak RSS of one cell, MB = base + services x (per_service + per_endpoint x endpoints) / 1024
(KB per service and per endpoint), fitted on this machine's sweeps (2026-12-03, after the
issue-16 memory work): 1,000 / 3,000 / 10,000 services x 10 endpoints (100,000 packets),
3,000 services x 2 and x 40 endpoints, 100,000 services x 10 (50,000 packets) and, for
IPVS, 1,000,000 x 10, by least squares on relative error. At 100,000 services it gives
6,651 / 3,754 / 1,867 MB against 6,570 / 3,748 / 1,968 measured (iptables / nftables /
IPVS); at 1,000,000 IPVS services 17,975 MB against 16,870. A cell is refused when the
estimate times MARGIN exceeds MemAvailable.
"""

from __future__ import annotations

from pathlib import Path

# mode: (base MB, KB per service, KB per endpoint)
RSS_MODEL: dict[str, tuple[float, float, float]] = {
    "iptables": (67.9, 12.2, 5.52),
    "nftables": (59.3, 9.31, 2.85),
    "ipvs": (77.6, 6.27, 1.21),
    "userspace": (89.0, 5.0, 2.4),
    "ebpf": (127.0, 6.7, 2.85),
}
MARGIN = 1.15  # the model's error at 100k services, and what the sweep's parent holds


def estimate_mb(mode: str, services: int, endpoints: int) -> float:
    """The estimated peak RSS of one bench cell, MB."""
    base, per_service, per_endpoint = RSS_MODEL[mode]
    return base + services * (per_service + per_endpoint * endpoints) / 1024.0


def available_mb(meminfo: str = "/proc/meminfo") -> float | None:
    """MemAvailable, MB (None when the kernel does not say)."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def refusal(mode: str, services: int, endpoints: int, available: float | None) -> str | None:
    """Why the cell will not fit (None: it fits, or the memory available is unknown)."""
    if available is None or mode not in RSS_MODEL:
        return None
    need = estimate_mb(mode, services, endpoints)
    if need * MARGIN <= available:
        return None
    return (
        f"estimated peak memory {need / 1024:.1f} GB (x{MARGIN} margin: "
        f"{need * MARGIN / 1024:.1f} GB) exceeds the {available / 1024:.1f} GB available"
    )
