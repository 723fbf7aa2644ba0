"""Stub for the compiled kproxy_emu._cext.sealing (source: cext/sealing.pyx)."""

from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

def configure(
    sealed_classes: set[type],
    field_names: dict[type, tuple[str, ...] | None],
    field_names_of: Callable[[type], tuple[str, ...] | None],
    sealed_class: Callable[[type], type],
    empty: dict[tuple[type, str, type], Any],
    shared_empty: Callable[[type, Any, str], Any],
    frozen_list: type,
    frozen_dict: type,
) -> None:
    """The seal module's registries (kept by reference) and helpers."""

def seal(obj: _T) -> _T:
    """Make a model object (and what it holds) read-only, in place; see model.seal."""
