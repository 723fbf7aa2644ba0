"""Label selectors, one object at a time (``matches``) and over many pods at once
(``LabelTable.mask``, numpy), with the namespace label the API server adds.

matchLabels and every matchExpressions requirement must hold (AND); an empty selector
matches everything. ``NotIn`` and ``DoesNotExist`` match an object that lacks the key
(k8s.io/apimachinery labels.Requirement.Matches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..model import Cluster
from ..model.netpol import NAMESPACE_NAME_LABEL, LabelSelector, Requirement


def requirement_matches(req: Requirement, labels: Mapping[str, str]) -> bool:
    has = req.key in labels
    if req.operator == "In":
        return has and labels[req.key] in req.values
    if req.operator == "NotIn":
        return not has or labels[req.key] not in req.values
    if req.operator == "Exists":
        return has
    return not has  # DoesNotExist


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy ``selector`` (empty: always)."""
    for key, value in selector.match_labels:
        if labels.get(key) != value:
            return False
    return all(requirement_matches(r, labels) for r in selector.expressions)


def namespace_labels(cluster: Cluster, namespace: str) -> dict[str, str]:
    """A namespace's labels with ``kubernetes.io/metadata.name`` set to its name, as the API
    server sets it on every namespace (also one the manifests do not hold)."""
    ns = cluster.namespaces.get(("", namespace))
    labels = dict(ns.labels) if ns is not None else {}
    labels[NAMESPACE_NAME_LABEL] = namespace
    return labels


class LabelTable:
    """The labels of a fixed list of objects as one integer column per key (value codes,
    -1 where the key is absent), so a selector becomes a few vectorised comparisons."""

    def __init__(self, labels: Sequence[Mapping[str, str]]):
        self._labels = labels
        self._columns: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        self._masks: dict[LabelSelector, np.ndarray] = {}
        self.size = len(labels)

    def _column(self, key: str) -> tuple[np.ndarray, dict[str, int]]:
        col = self._columns.get(key)
        if col is None:
            codes: dict[str, int] = {}
            values = np.fromiter(
                (
                    -1 if (v := lab.get(key)) is None else codes.setdefault(v, len(codes))
                    for lab in self._labels
                ),
                dtype=np.int32,
                count=self.size,
            )
            col = (values, codes)
            self._columns[key] = col
        return col

    def _requirement(self, req: Requirement) -> np.ndarray:
        values, codes = self._column(req.key)
        if req.operator in ("Exists", "DoesNotExist"):
            present = values >= 0
            return present if req.operator == "Exists" else ~present
        wanted = [codes[v] for v in req.values if v in codes]
        inside = np.isin(values, wanted) if wanted else np.zeros(self.size, dtype=bool)
        return inside if req.operator == "In" else ~inside

    def mask(self, selector: LabelSelector) -> np.ndarray:
        """Which objects the selector matches (a bool array; do not modify it)."""
        cached = self._masks.get(selector)
        if cached is not None:
            return cached
        out = np.ones(self.size, dtype=bool)
        for key, value in selector.match_labels:
            values, codes = self._column(key)
            code = codes.get(value)
            if code is None:
                out[:] = False
                break
            out &= values == code
        for req in selector.expressions:
            out &= self._requirement(req)
        out.flags.writeable = False
        self._masks[selector] = out
        return out
