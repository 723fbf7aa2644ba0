"""Sealing: objects a Dataplane has read become read-only.

kube-proxy's change trackers see an object change only when the watch delivers a new
version of it; the emulator's tracker likewise sees a change only when an object is
replaced (``dataclasses.replace``) or added/deleted. An object edited in place after the
Dataplane read it would otherwise be silently half-applied (a later full render would
show the edit while the node's rules do not). Sealing turns such an edit into an
InputError at the assignment that attempts it, naming the object, field and value.

A sealed object is the same dataclass under a read-only subclass (no per-object cost for
objects never sealed): it compares equal to its unsealed twin, prints the same, and
``dataclasses.replace``, ``copy.copy`` and ``copy.deepcopy`` give ordinary, editable
objects. Its lists and dicts become read-only ``list``/``dict`` subclasses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn, TypeVar

from .._cext import sealing as _sealing
from ..errors import InputError

T = TypeVar("T")

_HINT = "replace it (dataclasses.replace) and hand the new object to the Dataplane"


def _refuse(what: str, field: str | None, value: object) -> NoReturn:
    raise InputError(
        f"edited in place after a Dataplane read it; {_HINT}", obj=what, field=field, value=value
    )


class FrozenList(list):  # type: ignore[type-arg]
    """A list that refuses edits (a sealed object's field)."""

    # the sealed object and the field holding this, set by _freeze (two slots, not a
    # tuple: a million-service cluster has millions of these)
    __slots__ = ("_field", "_obj")
    _obj: Any
    _field: str

    def _no(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(_owner(self._obj), self._field, args[0] if args else None)

    append = extend = insert = remove = pop = clear = sort = reverse = _no  # type: ignore[assignment]
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _no  # type: ignore[assignment]

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        import copy

        return [copy.deepcopy(x, memo) for x in self]

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))


class FrozenDict(dict):  # type: ignore[type-arg]
    """A dict that refuses edits (labels, annotations, selectors of a sealed object)."""

    # the sealed object and the field holding this, set by _freeze (two slots, not a
    # tuple: a million-service cluster has millions of these)
    __slots__ = ("_field", "_obj")
    _obj: Any
    _field: str

    def _no(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(_owner(self._obj), self._field, args[0] if args else None)

    __setitem__ = __delitem__ = __ior__ = _no  # type: ignore[assignment]
    pop = popitem = clear = update = setdefault = _no  # type: ignore[assignment]

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        import copy

        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


_SEALED: dict[type, type] = {}  # dataclass -> its sealed subclass
_SEALED_CLASSES: set[type] = set()  # the sealed subclasses
# a type's dataclass fields that may hold something to seal, or None for a type that is
# not a dataclass (sealing walks millions of objects: dataclasses.fields per object, and a
# getattr per field that is declared a plain str, int, float, bool or None, are the cost)
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}
_ATOM_NAMES = frozenset({"str", "int", "float", "bool", "None"})


def _holds_atoms_only(annotation: object) -> bool:
    """The field is declared to hold only atoms (``str``, ``bool | None``, ...)."""
    if isinstance(annotation, type):
        return annotation in _ATOMS
    return isinstance(annotation, str) and all(
        part.strip() in _ATOM_NAMES for part in annotation.split("|")
    )


def _field_names(cls: type) -> tuple[str, ...] | None:
    try:
        return _FIELD_NAMES[cls]
    except KeyError:
        names = (
            tuple(f.name for f in dataclasses.fields(cls) if not _holds_atoms_only(f.type))
            if dataclasses.is_dataclass(cls)
            else None
        )
        _FIELD_NAMES[cls] = names
        return names


def _sealed_class(cls: type) -> type:
    sealed = _SEALED.get(cls)
    if sealed is not None:
        return sealed
    names = tuple(f.name for f in dataclasses.fields(cls))

    def __new__(klass: type, *args: Any, **kwargs: Any) -> Any:
        # dataclasses.replace and copy build through obj.__class__: give them the
        # ordinary class (Python skips __init__ for an instance of another class)
        if klass is sealed:
            return cls(*args, **kwargs)
        return object.__new__(klass)  # pragma: no cover - no subclasses of it

    def __setattr__(self: Any, name: str, value: object) -> NoReturn:
        _refuse(_describe(self), name, value)

    def __delattr__(self: Any, name: str) -> NoReturn:
        _refuse(_describe(self), name, None)

    def __eq__(self: Any, other: object) -> bool:
        if not isinstance(other, cls):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    def __copy__(self: Any) -> Any:
        return cls(**{n: getattr(self, n) for n in names})

    def __deepcopy__(self: Any, memo: dict[int, Any]) -> Any:
        import copy

        return cls(**{n: copy.deepcopy(getattr(self, n), memo) for n in names})

    def __reduce__(self: Any) -> tuple[Any, ...]:
        return (_rebuild, (cls, {n: getattr(self, n) for n in names}))

    sealed = type(
        cls.__name__,
        (cls,),
        {
            "__slots__": (),
            "__new__": __new__,
            "__setattr__": __setattr__,
            "__delattr__": __delattr__,
            "__eq__": __eq__,
            "__hash__": None,
            "__copy__": __copy__,
            "__deepcopy__": __deepcopy__,
            "__reduce__": __reduce__,
            "__qualname__": cls.__qualname__,
            "__module__": cls.__module__,
        },
    )
    _SEALED[cls] = sealed
    _SEALED_CLASSES.add(sealed)
    return sealed


def _rebuild(cls: type[T], values: dict[str, Any]) -> T:
    return cls(**values)


def _owner(obj: Any) -> str:
    """The object a frozen container belongs to; an empty one is shared by every object of
    a class (``_obj`` is the class), so it can name the class only."""
    if isinstance(obj, type):
        return f"a sealed {obj.__name__}"
    return _describe(obj)


def _describe(obj: Any) -> str:
    """``Service ns/name``; a nested object by its class and first field (``Endpoint
    10.0.0.1``)."""
    ref = getattr(obj, "ref", None)
    if isinstance(ref, str):
        return ref
    first = getattr(obj, dataclasses.fields(obj)[0].name)
    if isinstance(first, list):
        first = first[0] if first else ""
    return f"{model_type(obj).__name__} {first}"


def is_sealed(obj: object) -> bool:
    return type(obj) in _SEALED_CLASSES


def model_type(obj: object) -> type:
    """The model class of an object, sealed or not."""
    cls = type(obj)
    return cls.__base__ if cls in _SEALED_CLASSES else cls  # type: ignore[return-value]


# values that hold nothing to seal (exact types: a subclass may hold more)
_ATOMS = frozenset({str, int, float, bool, type(None)})


# the empty list and dict of each (class, field): most sealed lists are empty (an
# endpoint's hints), and a million-service cluster has millions of them
_EMPTY: dict[tuple[type, str, type], FrozenList | FrozenDict] = {}


def _shared_empty(kind: type, obj: Any, name: str) -> Any:
    key = (type(obj), name, kind)
    empty = _EMPTY.get(key)
    if empty is None:
        empty = _EMPTY[key] = FrozenList() if kind is list else FrozenDict()
        empty._obj, empty._field = type(obj), name
    return empty


# the walk itself is compiled (cext/sealing.pyx): millions of objects at 1M services
_sealing.configure(
    _SEALED_CLASSES,
    _FIELD_NAMES,
    _field_names,
    _sealed_class,
    _EMPTY,
    _shared_empty,
    FrozenList,
    FrozenDict,
)
seal = _sealing.seal
"""Make a model object (and the lists, dicts and objects it holds) read-only, in place.
Sealing a sealed object does nothing. Returns the object."""
