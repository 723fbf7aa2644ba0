"""Errors raised on bad input.

Every message names where the problem is (file, object as ``Kind namespace/name``, field
path) and the bad value, on one line, so the CLI can print it and exit 2 with no traceback.
"""

from __future__ import annotations

_UNSET = object()


class KproxyError(Exception):
    """Base class of every error kproxy-emu raises on purpose (the CLI exits 2 on these)."""


class InputError(KproxyError):
    """Bad input: a manifest, configuration file, flag or packet description."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        obj: str | None = None,
        field: str | None = None,
        value: object = _UNSET,
        line: int | None = None,
    ):
        self.message = message
        self.file = file
        self.obj = obj
        self.field = field
        self.value = value
        self.line = line
        super().__init__(str(self))

    def where(
        self, *, file: str | None = None, obj: str | None = None, line: int | None = None
    ) -> InputError:
        """Fill in context an inner layer did not know (the file, the object)."""
        if file is not None and self.file is None:
            self.file = file
        if obj is not None and self.obj is None:
            self.obj = obj
        if line is not None and self.line is None:
            self.line = line
        self.args = (str(self),)
        return self

    def __str__(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line is not None else self.file)
        if self.obj is not None:
            parts.append(self.obj)
        if self.field is not None:
            parts.append(self.field)
        text = self.message
        if self.value is not _UNSET:
            text = f"{text}: {self.value!r}"
        parts.append(text)
        return ": ".join(parts)


class CapacityError(InputError):
    """A cluster the chosen mode cannot hold, as the real dataplane could not (e.g.
    Cilium's 16-bit frontend IDs): bench reports such a cell as skipped, not failed."""
