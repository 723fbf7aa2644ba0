"""The Dataplane facade: one node of a cluster in one proxy mode."""

from .backend import (
    MODES,
    Backend,
    EbpfOptions,
    IptablesOptions,
    IpvsOptions,
    ModeOptions,
    NftablesOptions,
    NodeContext,
    UserspaceOptions,
)
from .dataplane import Dataplane, resolve_node

__all__ = [
    "MODES",
    "Backend",
    "Dataplane",
    "EbpfOptions",
    "IptablesOptions",
    "IpvsOptions",
    "ModeOptions",
    "NftablesOptions",
    "NodeContext",
    "UserspaceOptions",
    "resolve_node",
]
