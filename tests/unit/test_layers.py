"""The package's import graph follows its layers (docs/architecture.md): every import,
top-level, inside a function or under TYPE_CHECKING, points to a lower layer or stays in
its own package. No import cycle between packages can then exist."""

from __future__ import annotations

import ast
from pathlib import Path

import kproxy_emu

ROOT = Path(kproxy_emu.__file__).parent

# lower number = lower layer; a package may import its own layer's modules only when
# they are the same package
LAYERS = {
    "errors": 0,
    "_version": 0,
    "signals": 0,
    "ipaddr": 0,
    "_cext": 0,
    "packets": 1,
    "maglev": 1,
    "programtime": 1,  # the sync-time model (numpy only)
    "pcap": 2,
    "model": 2,
    "ipam": 3,
    "synth": 4,  # uses ipam
    "proxy": 3,
    "policy": 3,
    "dns": 3,
    "netfilter": 3,
    "modes": 4,
    "dataplane": 5,
    "bench": 6,
    "sim": 6,
    "lab": 6,
    "cluster_net": 6,
    "cli": 7,
    "__init__": 8,
    "__main__": 9,  # python -m kproxy_emu: the CLI
}


def _package(module: str) -> str:
    """The top-level package or module of ``kproxy_emu.x.y``; a name the root package
    re-exports (``from kproxy_emu import Dataplane``) counts as the root."""
    parts = module.split(".")
    if len(parts) < 2:
        return "__init__"
    name = parts[1]
    exists = (ROOT / name).is_dir() or (ROOT / f"{name}.py").exists()
    return name if exists else "__init__"


def _imports(path: Path) -> list[str]:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    module = list(rel.parts)
    if module[-1] == "__init__":
        module = module[:-1]
        base_for_level_1 = module
    else:
        base_for_level_1 = module[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = base_for_level_1[: len(base_for_level_1) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module:
                found.append(target)
            else:
                found.extend(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [t for t in found if t == "kproxy_emu" or t.startswith("kproxy_emu.")]


def _edges() -> set[tuple[str, str, str]]:
    edges = set()
    for path in ROOT.rglob("*.py"):
        rel = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        src = _package(rel.removesuffix(".__init__"))
        for target in _imports(path):
            dst = _package(target)
            if dst != src:
                edges.add((src, dst, str(path.relative_to(ROOT.parent))))
    return edges


def test_every_package_has_a_layer():
    packages = {
        _package(".".join(p.relative_to(ROOT.parent).with_suffix("").parts))
        for p in ROOT.rglob("*.py")
    }
    packages = {p.removesuffix(".__init__") for p in packages}
    assert packages <= set(LAYERS), packages - set(LAYERS)


def test_imports_point_down_the_layers():
    upward = sorted(
        f"{where}: {src} -> {dst}" for src, dst, where in _edges() if LAYERS[dst] >= LAYERS[src]
    )
    assert not upward, "imports against the layering:\n" + "\n".join(upward)
