"""The cluster as N nodes joined by a CNI model (docs/cluster.md).

Layer: above ``dataplane`` (one ``Dataplane`` per node) and ``dns`` (the end-to-end
trace's DNS step); beside ``bench`` and ``lab``."""

from .network import (
    CLUSTER_VERDICT_DTYPE,
    CNI_MODELS,
    OUTCOME_NAMES,
    PATH_NAMES,
    ClusterDataplane,
    ClusterTrace,
    CniModel,
    Outcome,
    Path,
)

__all__ = [
    "CLUSTER_VERDICT_DTYPE",
    "CNI_MODELS",
    "OUTCOME_NAMES",
    "PATH_NAMES",
    "ClusterDataplane",
    "ClusterTrace",
    "CniModel",
    "Outcome",
    "Path",
]
