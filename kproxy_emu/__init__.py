"""kproxy-emu: a packet-level emulator of the Kubernetes service dataplane (kube-proxy)."""

from . import packets, synth
from .dataplane import Dataplane, IptablesOptions, IpvsOptions, NftablesOptions
from .errors import InputError, KproxyError
from .model import Cluster
from .modes.ipvs import SharedVirtualServerWarning

__version__ = "0.1.0"
__all__ = [
    "Cluster",
    "Dataplane",
    "InputError",
    "IptablesOptions",
    "IpvsOptions",
    "KproxyError",
    "NftablesOptions",
    "SharedVirtualServerWarning",
    "__version__",
    "packets",
    "synth",
]
