"""kproxy-emu: a packet-level emulator of the Kubernetes service dataplane (kube-proxy)."""

from . import packets, synth
from .dataplane import Dataplane
from .errors import InputError, KproxyError
from .model import Cluster

__version__ = "0.1.0"
__all__ = ["Cluster", "Dataplane", "InputError", "KproxyError", "__version__", "packets", "synth"]
