"""Manifest files: reading YAML/JSON documents and writing them back.

Reads what `kubectl get -o yaml|json` writes (single objects, ``kind: List`` and typed
``*List`` documents, multi-document YAML) from files, directories (recursively, in sorted
order) or ``-`` for standard input. Writes JSON (a ``kind: List``) or multi-document block
YAML; the YAML writer is a small emitter of its own because PyYAML's dumper takes minutes
on a 100,000-service cluster.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def manifest_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Expand directories into the manifest files under them (sorted, recursive)."""
    files: list[str] = []
    for path in paths:
        path = os.fspath(path)
        if path == "-":
            files.append(path)
        elif os.path.isdir(path):
            found = sorted(
                str(p)
                for p in Path(path).rglob("*")
                if p.suffix in MANIFEST_SUFFIXES and p.is_file()
            )
            if not found:
                raise InputError("no .yaml, .yml or .json files in directory", file=path)
            files.extend(found)
        elif os.path.exists(path):
            files.append(path)
        else:
            raise InputError("no such file or directory", file=path)
    return files


# Deeper than any Kubernetes object; PyYAML's C composer recurses per level and overflows
# the C stack (a crash, not an exception) around 100,000 levels.
MAX_DEPTH = 200


def _max_line(text: str) -> int:
    return max(map(len, text.splitlines()), default=0)


def check_yaml_depth(text: str, file: str | None, line_offset: int = 0) -> None:
    """Refuse YAML nested deeper than MAX_DEPTH before anything composes it."""
    # cheap bound first: a level is a [ or { or, in block style, at least one more column
    # of indentation (or a "- " on the same line) than its parent
    if text.count("[") + text.count("{") + 2 * _max_line(text) + 2 <= MAX_DEPTH:
        return
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 + line_offset if event.start_mark else None
                    raise InputError(f"nested deeper than {MAX_DEPTH} levels", file=file, line=line)
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return  # the loader reports syntax errors with their line


def read_documents(path: str) -> Iterator[Any]:
    """Every top-level document in one file (empty YAML documents skipped)."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", file=path) from None
    if path.endswith(".json") or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except RecursionError:
            raise InputError("JSON nested too deeply", file=path) from None
        except json.JSONDecodeError as exc:
            if path.endswith(".json"):
                raise InputError(
                    f"JSON syntax error: {exc.msg} (column {exc.colno})", file=path, line=exc.lineno
                ) from None
            # not JSON after all: YAML flow style, fall through
        else:
            yield data
            return
    check_yaml_depth(text, path)
    try:
        for doc in yaml.load_all(text, Loader=_Loader):
            if doc is not None:
                yield doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise InputError(f"YAML syntax error: {problem}", file=path, line=line) from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {' '.join(str(exc).split())}", file=path) from None


def iter_objects(doc: Any, path: str) -> Iterator[dict]:
    """Flatten List documents into their items; each item is a dict with a kind."""
    if not isinstance(doc, dict):
        raise InputError(
            "document must be a mapping (a Kubernetes object or a List)",
            file=path,
            value=_short(doc),
        )
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        item_kind = kind[:-4] if kind != "List" else None
        items = doc.get("items")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise InputError(
                "must be a list", file=path, obj=kind, field="items", value=_short(items)
            )
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InputError(
                    "must be a mapping",
                    file=path,
                    obj=kind,
                    field=f"items[{i}]",
                    value=_short(item),
                )
            if item_kind and "kind" not in item:  # typed lists (ServiceList) omit item kinds
                item = dict(item, kind=item_kind, apiVersion=doc.get("apiVersion", "v1"))
            yield from iter_objects(item, path)
        return
    yield doc


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- writing

# \Z, not $: "$" also matches before a final newline
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*\Z|^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(/[0-9]+)?\Z")
_YAML11_SPECIAL = frozenset(["y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"])


# characters YAML does not allow unescaped, and the ones it reads as line breaks
# (JSON leaves them raw with ensure_ascii=False)
_NON_PRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _YAML11_SPECIAL:
            return value
        # a JSON string is a valid double-quoted YAML scalar; escaping non-BMP characters
        # as JSON's surrogate pairs would not read back, so they are written as they are
        text = json.dumps(value, ensure_ascii=False)
        return _NON_PRINTABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} to YAML")


def _emit(value: Any, pad: str, out: list[str]) -> None:
    """Block-style YAML as kubectl writes it (list items at their key's indentation)."""
    if isinstance(value, dict):
        for key, item in value.items():
            k = _scalar(str(key))
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{k}:")
                _emit(item, pad if isinstance(item, list) else pad + "  ", out)
            else:
                out.append(
                    f"{pad}{k}: {_empty(item) if isinstance(item, (dict, list)) else _scalar(item)}"
                )
    else:
        for item in value:
            if isinstance(item, dict) and item:
                inner: list[str] = []
                _emit(item, pad + "  ", inner)
                inner[0] = f"{pad}- {inner[0][len(pad) + 2 :]}"
                out.extend(inner)
            elif isinstance(item, list) and item:
                out.append(f"{pad}-")
                _emit(item, pad + "  ", out)
            else:
                out.append(
                    f"{pad}- {_empty(item) if isinstance(item, (dict, list)) else _scalar(item)}"
                )


def _empty(container: dict | list) -> str:
    return "{}" if isinstance(container, dict) else "[]"


def to_yaml(docs: Iterable[dict]) -> str:
    out: list[str] = []
    for doc in docs:
        out.append("---")
        _emit(doc, "", out)
    out.append("")
    return "\n".join(out)


def write_manifests(docs: list[dict], path: str | os.PathLike, *, overwrite: bool = True) -> None:
    """Write to ``path``: a JSON ``kind: List`` for .json, multi-document YAML otherwise
    (``-``: standard output). See ``write_text_atomic`` for how and ``overwrite``."""
    path = os.fspath(path)
    if path.endswith(".json"):
        # one item per line: json's C encoder only runs without indent, and a
        # 100,000-service list then writes in seconds instead of a minute
        items = ",\n".join(json.dumps(doc, separators=(",", ":")) for doc in docs)
        text = (
            '{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},'
            f'"items":[\n{items}\n]}}\n'
        )
    else:
        text = to_yaml(docs)
    if path == "-":
        sys.stdout.write(text)
        return
    write_text_atomic(path, text, overwrite=overwrite)


def refuse_existing(path: str) -> None:
    """The InputError for an output path that exists (a dangling symlink counts)."""
    if os.path.lexists(path):
        raise InputError("exists; give --force to replace it", file=path)


def write_text_atomic(path: str, text: str, *, overwrite: bool) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place: a
    failed write (a full disk) leaves no partial file, and ``path`` is either the old
    file or the whole new one. ``overwrite=False`` refuses an existing path; a symlink at
    ``path`` is replaced, its target left alone."""
    path = os.fspath(path)
    if not overwrite:
        refuse_existing(path)
    directory = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
        )
    except OSError as exc:
        raise InputError(f"cannot write file ({exc.strerror})", file=path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fh.fileno(), 0o666 & ~umask)  # as open() would create it, not 0600
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers
            os.unlink(tmp)
    except FileExistsError:
        _remove(tmp)
        refuse_existing(path)
        raise
    except OSError as exc:
        _remove(tmp)
        raise InputError(f"cannot write file ({exc.strerror or exc})", file=path) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
