"""The Dataplane facade: one node of a cluster in one proxy mode."""

from .dataplane import Dataplane, resolve_node

__all__ = ["Dataplane", "resolve_node"]
