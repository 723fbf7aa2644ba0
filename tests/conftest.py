import json
import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "kube-proxy" / "fixtures"


def require_fixtures():
    """The fixtures live in ../shared beside the clone: skip without them, but CI (and
    .ci/run) must never pass without them."""
    if not FIXTURES.is_dir():
        if os.environ.get("CI") or os.environ.get("KPROXY_EMU_REQUIRE_LAB"):
            pytest.fail(f"kube-proxy fixtures not found at {FIXTURES}")
        pytest.skip(f"kube-proxy fixtures not found at {FIXTURES}")


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


@pytest.fixture
def write(tmp_path):
    def _write(name, text):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    return _write


# CI runs a fixed set of hypothesis examples (the same on every run); developers' runs
# explore new ones each time.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
