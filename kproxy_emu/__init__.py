"""kproxy-emu: a packet-level emulator of the Kubernetes service dataplane (kube-proxy)."""

from . import maglev, packets, synth
from ._version import __version__
from .dataplane import (
    Dataplane,
    EbpfOptions,
    IptablesOptions,
    IpvsOptions,
    NftablesOptions,
    UserspaceOptions,
)
from .errors import InputError, KproxyError
from .model import Cluster
from .modes.ipvs import SharedVirtualServerWarning

__all__ = [
    "Cluster",
    "Dataplane",
    "EbpfOptions",
    "InputError",
    "IptablesOptions",
    "IpvsOptions",
    "KproxyError",
    "NftablesOptions",
    "SharedVirtualServerWarning",
    "UserspaceOptions",
    "__version__",
    "maglev",
    "packets",
    "synth",
]
