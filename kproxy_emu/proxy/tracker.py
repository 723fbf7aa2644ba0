"""Change tracking between syncs, as kube-proxy's ServiceChangeTracker and
EndpointsChangeTracker do it (pkg/proxy/servicechangetracker.go, endpointschangetracker.go).

Each Service, EndpointSlice and Node change is recorded per object as (previous,
current): the object as the last sync saw it and as it is now. Several changes to one
object between syncs merge (the first previous is kept); a change that ends where it
started is dropped, as kube-proxy drops an update whose previous and current are equal.
``take()`` hands the pending changes to a sync and starts afresh.

Simulators feed typed events (``Added``, ``Updated``, ``Deleted``); ``diff()`` turns a
new state of a Cluster into the same events by comparing objects by identity, which is
cheap: an object handed to the tracker is sealed (``model.seal``), so an object that is
still the same object is still the same value, and an edit in place raises InputError
instead of going unseen.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

from ..errors import InputError
from ..model.cluster import Cluster
from ..model.objects import EndpointSlice, Namespace, NetworkPolicy, Node, Pod, Service
from ..model.seal import model_type, seal

Key = tuple[str, str]
TrackedObject = Service | EndpointSlice | Node
# what Dataplane.apply also takes: objects only the NetworkPolicy stage reads (untracked here)
EventObject = TrackedObject | NetworkPolicy | Pod | Namespace
KINDS: dict[str, type] = {"Service": Service, "EndpointSlice": EndpointSlice, "Node": Node}


@dataclass(frozen=True, slots=True)
class Added:
    """A new object (its kind and key must not exist yet)."""

    obj: EventObject


@dataclass(frozen=True, slots=True)
class Updated:
    """A new version of an existing object (same kind, namespace and name)."""

    obj: EventObject


@dataclass(frozen=True, slots=True)
class Deleted:
    """An object removed: ``kind`` is Service, EndpointSlice or Node (Dataplane.apply
    also takes NetworkPolicy, Pod and Namespace); ``namespace`` is "" for a cluster-scoped
    object (Node, Namespace)."""

    kind: str
    namespace: str
    name: str


Event = Added | Updated | Deleted


@dataclass(slots=True)
class Changes:
    """What changed since the last sync, per object key: (previous, current), None for
    absent. ``services`` are the Services whose ServicePortInfos must be rebuilt: their
    Service changed, or an EndpointSlice labelled for them (before or after) did."""

    services: set[Key] = field(default_factory=set)
    service_objects: dict[Key, tuple[Service | None, Service | None]] = field(default_factory=dict)
    slice_objects: dict[Key, tuple[EndpointSlice | None, EndpointSlice | None]] = field(
        default_factory=dict
    )
    node_objects: dict[Key, tuple[Node | None, Node | None]] = field(default_factory=dict)
    reordered: bool = False  # the cluster's dict order changed: the view's order follows

    def __bool__(self) -> bool:
        return bool(self.services or self.node_objects or self.reordered)


def _service_of(s: EndpointSlice | None) -> Key | None:
    """The Service a slice belongs to (kube-proxy ignores slices without the label)."""
    if s is None or not s.service_name:
        return None
    return (s.namespace, s.service_name)


class ChangeTracker:
    """The objects the view was last built from, plus the changes recorded since.

    ``services``, ``slices`` and ``nodes`` are the current objects in the cluster's dict
    order; ``slices_of[service]`` holds each Service's slices, ordered as the cluster's
    ``endpoint_slices`` dict orders them (which decides which copy of a duplicated
    endpoint the view keeps)."""

    def __init__(self, cluster: Cluster):
        self.services: dict[Key, Service] = {}
        self.slices: dict[Key, EndpointSlice] = {}
        self.nodes: dict[Key, Node] = {}
        self.slices_of: dict[Key, dict[Key, EndpointSlice]] = {}
        self._seq: dict[Key, int] = {}  # slice -> its position in dict order (add order)
        self._next_seq = 0
        self._pending = Changes()
        self._reorder: list[type] = []  # kinds whose keys diff() found changed
        for svc in cluster.services.values():
            self.services[svc.key] = seal(svc)
        for s in cluster.endpoint_slices.values():
            self._put_slice(seal(s))
        for n in cluster.nodes.values():
            self.nodes[n.key] = seal(n)

    # ------------------------------------------------------------ recording

    def record(self, event: Event) -> None:
        """Apply one event to the tracked objects and note it as pending."""
        if isinstance(event, Deleted):
            cls = KINDS.get(event.kind)
            if cls is None:
                raise InputError(
                    f"cannot delete this kind (tracked: {', '.join(KINDS)})",
                    field="kind",
                    value=event.kind,
                )
            key = (event.namespace, event.name) if cls is not Node else ("", event.name)
            self._set(cls, key, None, f"{event.kind} {'/'.join(k for k in key if k)}")
            return
        if not isinstance(event, Added | Updated):
            raise InputError(
                "not a change event (Added, Updated or Deleted)",
                field="event",
                value=type(event).__name__,
            )
        obj = event.obj
        cls = model_type(obj)
        if cls not in KINDS.values():
            raise InputError(
                f"not a tracked kind (tracked: {', '.join(KINDS)})",
                field="obj",
                value=cls.__name__,
            )
        exists = obj.key in self._objects(cls)
        if isinstance(event, Added) and exists:
            raise InputError("added, but an object of that name exists", obj=obj.ref)
        if isinstance(event, Updated) and not exists:
            raise InputError("updated, but there is no object of that name", obj=obj.ref)
        self._set(cls, obj.key, seal(cast(TrackedObject, obj)), obj.ref)

    def diff(self, cluster: Cluster) -> list[Event]:
        """The events that turn the tracked objects into ``cluster``'s. Objects are
        compared by identity: a replaced object is an update (dropped later if equal).
        When the keys are the same in the same order (the usual case), the comparison
        runs in C."""
        events: list[Event] = []
        self._reorder = []
        sources: tuple[tuple[type[TrackedObject], Mapping[Key, TrackedObject]], ...] = (
            (Service, cluster.services),
            (EndpointSlice, cluster.endpoint_slices),
            (Node, cluster.nodes),
        )
        for cls, new in sources:
            old = self._objects(cls)
            if len(old) == len(new) and list(old) == list(new):
                replaced = map(operator.is_not, old.values(), new.values())
                events.extend(map(Updated, itertools.compress(new.values(), replaced)))
                continue
            self._reorder.append(cls)
            for key, obj in new.items():
                have = old.get(key)
                if have is None:
                    events.append(Added(obj))
                elif have is not obj:
                    events.append(Updated(obj))
            events.extend(Deleted(cls.kind, *key) for key in old if key not in new)
        return events

    def follow_order(self, cluster: Cluster) -> None:
        """After ``diff``'s events: make the tracked dicts iterate as the cluster's do (a
        cluster rebuilt in another order changes the view's order, as a full rebuild would)."""
        if Service in self._reorder and list(self.services) != list(cluster.services):
            self.services = {k: self.services[k] for k in cluster.services}
            self._pending.reordered = True
        if EndpointSlice in self._reorder and list(self.slices) != list(cluster.endpoint_slices):
            self.slices = {k: self.slices[k] for k in cluster.endpoint_slices}
            self._seq = {k: i for i, k in enumerate(self.slices)}
            self._next_seq = len(self._seq)
            for svc, group in self.slices_of.items():
                if len(group) > 1:
                    self.slices_of[svc] = dict(sorted(group.items(), key=self._order))
                    self._pending.services.add(svc)
        if Node in self._reorder and list(self.nodes) != list(cluster.nodes):
            self.nodes = {k: self.nodes[k] for k in cluster.nodes}
        self._reorder = []

    def take(self) -> Changes:
        """The changes since the last call (kube-proxy's tracker Update at sync time)."""
        pending, self._pending = self._pending, Changes()
        for key, (prev, cur) in list(pending.service_objects.items()):
            if prev == cur:
                del pending.service_objects[key]
            else:
                pending.services.add(key)
        for key, (prev_s, cur_s) in list(pending.slice_objects.items()):
            if prev_s == cur_s:
                del pending.slice_objects[key]
                continue
            for svc in (_service_of(prev_s), _service_of(cur_s)):
                if svc is not None:
                    pending.services.add(svc)
        for key, (prev_n, cur_n) in list(pending.node_objects.items()):
            if prev_n == cur_n:
                del pending.node_objects[key]
        return pending

    # ------------------------------------------------------------ helpers

    def slices_for(self, service: Key) -> Iterable[EndpointSlice]:
        return self.slices_of.get(service, {}).values()

    def _objects(self, cls: type) -> dict[Key, TrackedObject]:
        if cls is Service:
            return self.services  # type: ignore[return-value]
        if cls is EndpointSlice:
            return self.slices  # type: ignore[return-value]
        return self.nodes  # type: ignore[return-value]

    def _order(self, item: tuple[Key, EndpointSlice]) -> int:
        return self._seq[item[0]]

    def _set(self, cls: type, key: Key, obj: TrackedObject | None, ref: str) -> None:
        objects = self._objects(cls)
        prev = objects.get(key)
        if obj is None and prev is None:
            raise InputError("deleted, but there is no object of that name", obj=ref)
        pending: dict = (
            self._pending.service_objects
            if cls is Service
            else self._pending.slice_objects
            if cls is EndpointSlice
            else self._pending.node_objects
        )
        if key in pending:
            first = pending[key][0]
            if prev is None and obj is not None:
                # deleted and added again since the last sync: now last in dict order
                if cls is Service:
                    self._pending.reordered = True
                elif (svc := _service_of(obj)) is not None:  # type: ignore[arg-type]
                    self._pending.services.add(svc)
        else:
            first = prev
        pending[key] = (first, obj)
        if cls is EndpointSlice:
            if prev is not None:
                self._drop_slice(cast(EndpointSlice, prev))  # cls is EndpointSlice
            if obj is None:
                del self.slices[key]
                del self._seq[key]
            else:
                self._put_slice(obj)  # type: ignore[arg-type]
            return
        if obj is None:
            del objects[key]
        else:
            objects[key] = obj

    def _put_slice(self, s: EndpointSlice) -> None:
        key = s.key
        if key not in self._seq:
            self._seq[key] = self._next_seq
            self._next_seq += 1
        self.slices[key] = s
        svc = _service_of(s)
        if svc is None:
            return
        group = self.slices_of.setdefault(svc, {})
        group[key] = s  # appended: it belongs last only if it is the newest of the group
        if len(group) > 1 and self._seq[list(group)[-2]] > self._seq[key]:
            self.slices_of[svc] = dict(sorted(group.items(), key=self._order))

    def _drop_slice(self, s: EndpointSlice) -> None:
        """Take a slice out of its Service's group (a replaced slice keeps its place in
        ``slices`` and its order)."""
        svc = _service_of(s)
        if svc is not None:
            group = self.slices_of.get(svc)
            if group is not None:
                group.pop(s.key, None)
                if not group:
                    del self.slices_of[svc]
