"""What one sync of a mode wrote and what it cost."""

from __future__ import annotations

from collections.abc import Callable


class SyncResult:
    """One sync: full or partial, the payload in the mode's own model, its text (what
    kube-proxy hands to iptables-restore, nft -f or ipvsadm/netlink), the services it
    touched, and mode-specific size figures (``extra``).

    ``text`` may be given as a function that renders it: a full sync's text at a million
    services is gigabytes and tens of seconds of rendering that a run measuring packets
    never reads, so it is rendered on first use, then kept. ``size``, when given, counts
    (lines, bytes) of the text not rendered yet without holding it."""

    def __init__(
        self,
        full: bool,
        payload: object,
        text: str | Callable[[], str],
        changed: set[tuple[str, str]] | None = None,
        error: str | None = None,  # the apply failed; the next sync is a full one
        extra: dict[str, int] | None = None,
        # it rewrites rules of Services already programmed (else it only adds new ones)
        rewrites: bool = True,
        # the kernel's time to load it, from the Dataplane's program_model (None: no model)
        predicted_program_s: float | None = None,
        size: Callable[[], tuple[int, int]] | None = None,
    ):
        self.full = full
        self.payload = payload
        self._text = text
        self.changed: set[tuple[str, str]] = set() if changed is None else changed
        self.error = error
        self.extra: dict[str, int] = {} if extra is None else extra
        self.rewrites = rewrites
        self.predicted_program_s = predicted_program_s
        self._size = size
        self._measured: tuple[int, int] | None = None

    def __repr__(self) -> str:
        text = f"{len(self._text)} chars" if isinstance(self._text, str) else "not rendered"
        return (
            f"SyncResult(full={self.full}, ok={self.ok}, text: {text}, "
            f"changed={len(self.changed)} services, extra={self.extra})"
        )

    @property
    def text(self) -> str:
        if not isinstance(self._text, str):
            self._text = self._text()
        return self._text

    @text.setter
    def text(self, value: str | Callable[[], str]) -> None:
        self._text = value

    @property
    def ok(self) -> bool:
        return self.error is None

    def _counted(self) -> tuple[int, int] | None:
        if isinstance(self._text, str) or self._size is None:
            return None
        if self._measured is None:
            self._measured = self._size()
        return self._measured

    @property
    def lines(self) -> int:
        counted = self._counted()
        return counted[0] if counted is not None else self.text.count("\n")

    @property
    def bytes(self) -> int:
        counted = self._counted()
        return counted[1] if counted is not None else len(self.text.encode())

    def cost(self) -> dict[str, int]:
        """What this sync wrote: lines and bytes of its text, plus the mode's own units
        (``extra``; iptables: nat rules; nftables: transaction operations and elements;
        IPVS: netlink and ipset operations)."""
        return {"lines": self.lines, "bytes": self.bytes, **self.extra}
