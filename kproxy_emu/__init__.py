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
from .sim import Added, Deleted, ProgramTimeModel, Simulator, Snapshot, StepSync, Updated

__all__ = [
    "Added",
    "Cluster",
    "Dataplane",
    "Deleted",
    "EbpfOptions",
    "InputError",
    "IptablesOptions",
    "IpvsOptions",
    "KproxyError",
    "NftablesOptions",
    "ProgramTimeModel",
    "SharedVirtualServerWarning",
    "Simulator",
    "Snapshot",
    "StepSync",
    "Updated",
    "UserspaceOptions",
    "__version__",
    "maglev",
    "packets",
    "synth",
]
