"""What one sync of a mode wrote and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SyncResult:
    """One sync: full or partial, the payload in the mode's own model, its text (what
    kube-proxy hands to iptables-restore, nft -f or ipvsadm/netlink), the services it
    touched, and mode-specific size figures (``extra``)."""

    full: bool
    payload: object
    text: str
    changed: set[tuple[str, str]] = field(default_factory=set)
    error: str | None = None  # the apply failed; the next sync is a full one
    extra: dict[str, int] = field(default_factory=dict)
    # it rewrites rules of Services already programmed (else it only adds new ones)
    rewrites: bool = True
    # the kernel's time to load it, from the Dataplane's program_model (None: no model)
    predicted_program_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def lines(self) -> int:
        return self.text.count("\n")

    @property
    def bytes(self) -> int:
        return len(self.text.encode())

    def cost(self) -> dict[str, int]:
        """What this sync wrote: lines and bytes of its text, plus the mode's own units
        (``extra``; iptables: nat rules; nftables: transaction operations and elements;
        IPVS: netlink and ipset operations)."""
        return {"lines": self.lines, "bytes": self.bytes, **self.extra}
