"""Can this machine run the lab? Root, network namespaces and the netfilter tools.

The lab only ever changes namespaces it created itself; these checks run before anything
is created so a developer machine gets one clear message instead of a half-built lab.
"""

from __future__ import annotations

import os
import shutil

from ..errors import KproxyError

# tool -> Debian package, for the message when it is missing
TOOLS = {"ip": "iproute2", "sysctl": "procps"}
MODE_TOOLS = {
    "iptables": {"iptables-restore": "iptables", "nfacct": "nfacct"},
    "nftables": {"nft": "nftables"},
}


class LabUnavailable(KproxyError):
    """The lab cannot run here (not root, no netns support, a tool or pyroute2 missing)."""


def missing_tools(tools: dict[str, str]) -> list[str]:
    return [
        f"{tool} (Debian package {pkg})"
        for tool, pkg in tools.items()
        if shutil.which(tool) is None
    ]


def check(mode: str | None = "iptables", backend: str = "nft") -> None:
    """Raise LabUnavailable naming what is missing (``mode`` None: the namespaces only)."""
    if os.geteuid() != 0:
        raise LabUnavailable(
            "the kernel lab needs root (it creates network namespaces and "
            "loads netfilter rules into them)"
        )
    if not os.path.exists("/proc/self/ns/net"):
        raise LabUnavailable("this kernel has no network namespaces (/proc/self/ns/net)")
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        raise LabUnavailable("the kernel lab needs pyroute2 (pip install pyroute2)") from None
    if mode is not None and mode not in MODE_TOOLS:
        raise LabUnavailable(f"the lab runs the iptables and nftables modes, not {mode!r}")
    need = {**TOOLS, **(MODE_TOOLS.get(mode, {}) if mode is not None else {})}
    if mode == "iptables" and backend == "legacy":
        need["iptables-legacy-restore"] = "iptables"
    missing = missing_tools(need)
    if missing:
        raise LabUnavailable("missing tool(s): " + ", ".join(missing))


def unavailable_reason(mode: str = "iptables") -> str | None:
    """None when the lab can run, else why not (for test skips)."""
    try:
        check(mode)
    except LabUnavailable as exc:
        return str(exc)
    return None
