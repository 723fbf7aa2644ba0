"""kube-proxy's own test fixtures, vendored in tests/data/kube-proxy (see tests/data/README.md)."""

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "kube-proxy"


def require_fixtures():
    """The fixtures ship with the repository: a clone without them is broken."""
    if not FIXTURES.is_dir():
        pytest.fail(f"kube-proxy fixtures not found at {FIXTURES} (see tests/data/README.md)")


def fixture_inputs():
    """Every (fixture file, services, endpointSlices) input in the kube-proxy fixtures."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            if isinstance(node.get("services"), list):
                found.append((where, node["services"], node.get("endpointSlices", [])))
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for path in sorted(FIXTURES.glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    return found


def as_manifests(services, slices):
    """Fixture objects carry no apiVersion/kind (Go structs); add them as kubectl would."""
    return [dict(s, apiVersion="v1", kind="Service") for s in services] + [
        dict(s, apiVersion="discovery.k8s.io/v1", kind="EndpointSlice") for s in slices
    ]
