"""The emulated node a lab run compares against."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..dataplane import Dataplane, ModeOptions
    from ..model import Cluster

LAB_MODES = ("iptables", "nftables")  # what this kernel runs (it has no IPVS)


def lab_dataplane(
    cluster: Cluster, mode: str | ModeOptions = "iptables", node: str | None = None, **options
) -> Dataplane:
    """A Dataplane for ``mode`` (a name or the mode's options object); the lab refuses
    modes the kernel here cannot run."""
    from ..dataplane import Dataplane
    from ..dataplane.backend import mode_options

    if mode_options(mode).mode not in LAB_MODES:
        raise InputError(
            "the lab runs iptables or nftables (this kernel has no IPVS)", field="mode", value=mode
        )
    return Dataplane(cluster, mode, node=node, **options)
