"""NetworkPolicy (networking.k8s.io/v1) semantics: who may reach whom.

``allowed`` decides one connection (pure Python, naming the policies and rules involved);
``reachability`` computes the pod-to-pod matrix with numpy over selector and peer masks.
Layer: imports ``model`` only (docs/architecture.md); docs/networkpolicy.md has the
semantics and where each fact comes from.
"""

from .evaluate import (
    CompiledPolicy,
    Decision,
    DirectionDecision,
    RuleRef,
    allowed,
    compile_policies,
    connections,
    format_connections,
    port_matches,
)
from .matrix import (
    PolicyMasks,
    probe_pods,
    reachability,
    reachability_masks,
    service_frontend,
    service_frontends,
)
from .selectors import LabelTable, matches, namespace_labels

__all__ = [
    "CompiledPolicy",
    "Decision",
    "DirectionDecision",
    "LabelTable",
    "PolicyMasks",
    "RuleRef",
    "allowed",
    "compile_policies",
    "connections",
    "format_connections",
    "matches",
    "namespace_labels",
    "port_matches",
    "probe_pods",
    "reachability",
    "reachability_masks",
    "service_frontend",
    "service_frontends",
]
