"""The compiler contract the three modes share: kube-proxy's Proxier, minus the watches.

A proxier is built once per node with the node's ProxyOptions and keeps, between syncs,
what kube-proxy's proxier keeps: the node state it programs (iptables tables, the
nftables table), per-service-port caches (chain names and hashes, as kube-proxy's
``servicePortInfo`` holds them), and whether the next sync must be full. ``sync`` is one
``syncProxyRules``:

- ``changed`` None (or a pending full sync: the first, or one after a failed apply)
  writes everything; otherwise a partial sync rewrites only these Services' own chains,
  as kube-proxy's partial syncs do (modes that always sync in full, IPVS, ignore it);
- the payload is applied to the node state the proxier holds, and the result says what
  was written (``payload``), whether it was full and whether applying it failed.

A backend (``dataplane/*_backend.py``) owns one proxier, calls ``sync`` with the view
and the changed Services the change tracker found, and turns the result into a
SyncResult; adding a mode means adding one such proxier.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, Protocol, TypeVar

from ..proxy.options import ProxyOptions
from ..proxy.view import ProxyView

Key = tuple[str, str]


class ProxierResult(Protocol):
    """What every mode's sync result carries."""

    @property
    def full(self) -> bool: ...

    @property
    def error(self) -> str | None: ...


R = TypeVar("R", bound=ProxierResult)


class Proxier(ABC, Generic[R]):
    """One node's proxier in one mode (see the module docstring)."""

    mode: str
    options: ProxyOptions
    need_full_sync: bool

    @abstractmethod
    def sync(self, view: ProxyView, changed: set[Key] | None = None, now: float = 0.0) -> R:
        """One syncProxyRules at emulated time ``now`` (seconds)."""
