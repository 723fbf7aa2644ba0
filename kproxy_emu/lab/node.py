"""The emulated node a lab run compares against."""

from __future__ import annotations

from ..errors import InputError

LAB_MODES = ("iptables", "nftables")  # what this kernel runs (it has no IPVS)


def lab_dataplane(cluster, mode: str = "iptables", node: str | None = None, **options):
    """A Dataplane for ``mode``; the lab refuses modes the kernel here cannot run."""
    from ..dataplane.dataplane import Dataplane

    if mode not in LAB_MODES:
        raise InputError(
            "the lab runs iptables or nftables (this kernel has no IPVS)", field="mode", value=mode
        )
    return Dataplane(cluster, mode, node=node, **options)
