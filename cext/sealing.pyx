# cython: language_level=3
"""The walk of model sealing (kproxy_emu.model.seal owns the read-only classes and says
what sealing means): compiled, because a million-service cluster has some ten million
objects, lists and dicts to walk and the interpreted walk took about 3 us an endpoint.

``configure`` hands over the Python side's helpers once, at seal's import.
"""

cdef set _sealed_classes = set()
cdef dict _field_names = {}
cdef object _field_names_of = None
cdef object _sealed_class = None
cdef object _shared_empty = None
cdef dict _empty = {}
cdef object _frozen_list = None
cdef object _frozen_dict = None
cdef object _setattr = object.__setattr__


def configure(sealed_classes, field_names, field_names_of, sealed_class, empty, shared_empty,
              frozen_list, frozen_dict):
    """The seal module's registries (kept by reference) and helpers."""
    global _sealed_classes, _field_names, _field_names_of, _sealed_class, _shared_empty
    global _frozen_list, _frozen_dict, _empty
    _empty = empty
    _sealed_classes = sealed_classes
    _field_names = field_names
    _field_names_of = field_names_of
    _sealed_class = sealed_class
    _shared_empty = shared_empty
    _frozen_list = frozen_list
    _frozen_dict = frozen_dict


cdef inline bint _atom(object value):
    cdef type kind = type(value)
    return kind is str or kind is int or value is None or kind is bool or kind is float


cdef inline object _names(type cls):
    names = _field_names.get(cls, _field_names)  # the dict itself: not looked at yet
    if names is _field_names:
        names = _field_names_of(cls)
    return names


cpdef object seal(object obj):
    """Make a model object (and what it holds) read-only, in place; see model.seal."""
    cdef type cls = type(obj)
    if cls in _sealed_classes:
        return obj
    names = _names(cls)
    if names is None:
        return obj
    for name in <tuple>names:
        value = getattr(obj, name)
        if _atom(value):
            continue
        frozen = _freeze(value, obj, name)
        if frozen is not value:
            _setattr(obj, name, frozen)
    _setattr(obj, "__class__", _sealed_class(cls))
    return obj


cdef object _freeze(object value, object obj, str name):
    cdef type kind = type(value)
    cdef list items
    if _atom(value):
        return value
    if kind is list or kind is dict:
        if not value:
            shared = _empty.get((type(obj), name, kind))
            return shared if shared is not None else _shared_empty(kind, obj, name)
        if kind is list:
            items = [v if _atom(v) else _freeze(v, obj, name) for v in <list>value]
            out = _frozen_list(items)
        else:
            out = _frozen_dict(
                {k: v if _atom(v) else _freeze(v, obj, name) for k, v in (<dict>value).items()}
            )
        out._obj = obj
        out._field = name
        return out
    if isinstance(value, (_frozen_list, _frozen_dict, type)):
        return value
    if isinstance(value, list):  # a subclass: as its base
        return _freeze(list(value), obj, name)
    if isinstance(value, dict):
        return _freeze(dict(value), obj, name)
    if _names(kind) is not None:
        return seal(value)
    return value
