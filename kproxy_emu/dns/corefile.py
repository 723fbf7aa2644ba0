"""Read a CoreDNS Corefile: the server blocks and the ``kubernetes`` block's options.

The Caddyfile grammar CoreDNS uses: server blocks ``KEY [KEY...] { ... }``, inside them one
directive (a plugin) per line with its arguments, an optional ``{ ... }`` block of
sub-directives; ``#`` comments; double-quoted tokens; ``{$ENV}`` placeholders. The
``kubernetes`` block's properties are read as ``plugin/kubernetes/setup.go`` reads them
(same names, same errors); the other plugins are named in a warning and ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
import warnings
from dataclasses import dataclass, field

from ..errors import InputError
from .resolver import POD_MODES, normalize_zone


class CorefileWarning(UserWarning):
    """A Corefile plugin or property the emulator reads but does not model."""


@dataclass
class KubernetesConfig:
    """The ``kubernetes`` block: what the Resolver takes."""

    zones: list[str] = field(default_factory=lambda: ["cluster.local."])
    pods: str = "disabled"
    ttl: int = 5
    endpoint_pod_names: bool = False
    ignore_empty_service: bool = False
    namespaces: list[str] = field(default_factory=list)
    fallthrough: list[str] | None = None  # None: no fallthrough; []: every zone
    zonal: bool = False
    server_keys: list[str] = field(default_factory=list)
    line: int = 0
    ignored: list[str] = field(default_factory=list)  # plugins named in the warning

    def resolver_kwargs(self) -> dict[str, object]:
        return {
            "zones": self.zones,
            "pods": self.pods,
            "ttl": self.ttl,
            "endpoint_pod_names": self.endpoint_pod_names,
            "ignore_empty_service": self.ignore_empty_service,
            "namespaces": self.namespaces,
            "fallthrough": self.fallthrough,
            "zonal": self.zonal,
        }


@dataclass
class _Token:
    text: str
    line: int
    quoted: bool = False


@dataclass
class _Directive:
    name: str
    args: list[_Token]
    line: int
    block: list[_Directive] | None = None


@dataclass
class ServerBlock:
    keys: list[str]
    line: int
    directives: list[_Directive]


_ENV = re.compile(r"\{\$([A-Za-z_][A-Za-z0-9_]*)\}|\{%([A-Za-z_][A-Za-z0-9_]*)%\}")
# properties setup.go accepts that the emulator has nothing to do with: API access, client
# tuning, label filters (which objects the informers list)
_NOT_MODELLED = {
    "endpoint",
    "tls",
    "kubeconfig",
    "labels",
    "namespace_labels",
    "noendpoints",
    "multicluster",
    "startup_timeout",
    "apiserver_qps",
    "apiserver_burst",
    "apiserver_max_inflight",
}


def _tokenize(text: str, path: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c in " \t\r":
            i += 1
            continue
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c == '"':
            start_line = line
            i += 1
            buf = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] == '"':
                    buf.append('"')
                    i += 2
                    continue
                if text[i] == "\n":
                    line += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise InputError("unterminated quoted string", file=path, line=start_line)
            i += 1
            tokens.append(_Token("".join(buf), start_line, True))
            continue
        start = i
        while i < n and text[i] not in " \t\r\n":
            i += 1
        word = text[start:i]
        # "}" or "{" glued to a word (".:53{") stay separate tokens, as Caddy's lexer does
        # for a trailing "{"
        if len(word) > 1 and word.endswith("{") and not word.startswith("{$"):
            tokens.append(_Token(_expand(word[:-1]), line))
            tokens.append(_Token("{", line))
        else:
            tokens.append(_Token(_expand(word), line))
    return tokens


def _expand(word: str) -> str:
    return _ENV.sub(lambda m: os.environ.get(m.group(1) or m.group(2), ""), word)


def parse_corefile(text: str, path: str = "Corefile") -> list[ServerBlock]:
    """The server blocks of a Corefile (no semantics yet): InputError naming path:line."""
    tokens = _tokenize(text, path)
    blocks: list[ServerBlock] = []
    i = 0

    def is_open(t: _Token) -> bool:
        return t.text == "{" and not t.quoted

    def is_close(t: _Token) -> bool:
        return t.text == "}" and not t.quoted

    while i < len(tokens):
        start = tokens[i]
        keys: list[str] = []
        while i < len(tokens) and not is_open(tokens[i]):
            if is_close(tokens[i]):
                raise InputError("unexpected '}'", file=path, line=tokens[i].line)
            if (
                keys
                and tokens[i].line != tokens[i - 1].line
                and not tokens[i - 1].text.endswith(",")
            ):
                raise InputError(
                    f"server block keys must be followed by '{{', got {tokens[i].text!r}",
                    file=path,
                    line=tokens[i].line,
                )
            keys.extend(k for k in tokens[i].text.split(",") if k)
            i += 1
        if i >= len(tokens):
            raise InputError(
                "server block without '{'" if keys else "empty server block",
                file=path,
                line=start.line,
            )
        if not keys:
            raise InputError("'{' without server block keys", file=path, line=tokens[i].line)
        i += 1
        directives, i = _parse_directives(tokens, i, path, start.line, nested=False)
        blocks.append(ServerBlock(keys, start.line, directives))
    if not blocks:
        raise InputError("no server block", file=path)
    return blocks


def _parse_directives(
    tokens: list[_Token], i: int, path: str, open_line: int, nested: bool
) -> tuple[list[_Directive], int]:
    out: list[_Directive] = []
    while i < len(tokens):
        t = tokens[i]
        if t.text == "}" and not t.quoted:
            return out, i + 1
        if t.text == "{" and not t.quoted:
            raise InputError("unexpected '{'", file=path, line=t.line)
        d = _Directive(t.text, [], t.line)
        i += 1
        while i < len(tokens) and tokens[i].line == t.line:
            a = tokens[i]
            if a.text == "{" and not a.quoted:
                if nested:
                    raise InputError(
                        f"{d.name}: blocks nest only one level", file=path, line=a.line
                    )
                d.block, i = _parse_directives(tokens, i + 1, path, a.line, nested=True)
                break
            if a.text == "}" and not a.quoted:
                break
            d.args.append(a)
            i += 1
        out.append(d)
    raise InputError("missing '}' for the block opened here", file=path, line=open_line)


def _zone_from_key(key: str, path: str, line: int) -> list[str]:
    """A server block key (``.:53``, ``dns://cluster.local:53``, ``10.0.0.0/8``) as zones."""
    for scheme in ("dns://", "tls://", "https://", "grpc://", "quic://", "https3://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
    host = key
    if ":" in key and "/" not in key and not key.startswith("["):
        host = key.rsplit(":", 1)[0] if key.count(":") == 1 else key
    return _origins(host or ".", path, line)


def _origins(zone: str, path: str, line: int) -> list[str]:
    """plugin.Host(...).NormalizeExact: a name, or a CIDR as its reverse zones."""
    if "/" in zone:
        try:
            net = ipaddress.ip_network(zone, strict=False)
        except ValueError:
            raise InputError("invalid CIDR zone", file=path, line=line, value=zone) from None
        step = 8 if net.version == 4 else 4
        prefix = -(-net.prefixlen // step) * step
        out = []
        for sub in net.subnets(new_prefix=prefix) if prefix != net.prefixlen else [net]:
            rev = sub.network_address.reverse_pointer.split(".")
            keep = prefix // step
            labels = rev[len(rev) - 2 - keep :]
            out.append(".".join(labels) + ".")
        return out
    return [normalize_zone(zone)]


def kubernetes_config(text: str, path: str = "Corefile") -> KubernetesConfig:
    """The ``kubernetes`` block of a Corefile, read as setup.go reads it.

    Warns (CorefileWarning) once naming the plugins that are ignored, and for each
    kubernetes property that is accepted but not modelled. Exactly one kubernetes block
    must be present."""
    blocks = parse_corefile(text, path)
    found: list[tuple[ServerBlock, _Directive]] = []
    ignored: list[str] = []
    for b in blocks:
        for d in b.directives:
            if d.name == "kubernetes":
                found.append((b, d))
            elif d.name not in ignored:
                ignored.append(d.name)
    if not found:
        raise InputError("no kubernetes plugin in any server block", file=path)
    if len(found) > 1:
        raise InputError(
            "more than one kubernetes block; the emulator models one",
            file=path,
            line=found[1][1].line,
        )
    block, d = found[0]
    cfg = KubernetesConfig(server_keys=block.keys, line=d.line)
    server_zones = [z for k in block.keys for z in _zone_from_key(k, path, block.line)]
    if d.args:
        cfg.zones = [z for a in d.args for z in _origins(a.text, path, a.line)]
    else:
        cfg.zones = server_zones
    if not any(not (z.endswith(".in-addr.arpa.") or z.endswith(".ip6.arpa.")) for z in cfg.zones):
        raise InputError("kubernetes: non-reverse zone name must be used", file=path, line=d.line)
    for prop in d.block or []:
        _property(cfg, prop, path)
    cfg.ignored = ignored
    if ignored:
        warnings.warn(
            CorefileWarning(
                f"{path}: plugins not modelled, ignored: {', '.join(ignored)} (only "
                "kubernetes answers here)"
            ),
            stacklevel=2,
        )
    return cfg


def _property(cfg: KubernetesConfig, p: _Directive, path: str) -> None:
    args = [a.text for a in p.args]

    def fail(message: str, value: object = None) -> InputError:
        extra = {} if value is None else {"value": value}
        return InputError(f"kubernetes: {message}", file=path, line=p.line, **extra)  # type: ignore[arg-type]

    if p.block is not None:
        raise fail(f"{p.name}: unexpected block")
    name = p.name
    if name == "endpoint_pod_names":
        if args:
            raise fail("endpoint_pod_names: wrong argument count", " ".join(args))
        cfg.endpoint_pod_names = True
    elif name == "pods":
        if len(args) != 1:
            raise fail("pods: wrong argument count", " ".join(args))
        if args[0] not in POD_MODES:
            raise fail(
                "wrong value for pods, must be one of: disabled, verified, insecure", args[0]
            )
        cfg.pods = args[0]
    elif name == "namespaces":
        if not args:
            raise fail("namespaces: wrong argument count")
        cfg.namespaces.extend(args)
    elif name == "fallthrough":
        cfg.fallthrough = [z for a in args for z in _origins(a, path, p.line)]
    elif name == "ttl":
        if not args:
            raise fail("ttl: wrong argument count")
        try:
            t = int(args[0])
        except ValueError:
            raise fail("ttl: not a number", args[0]) from None
        if not 0 <= t <= 3600:
            raise fail("ttl must be in range [0, 3600]", t)
        cfg.ttl = t
    elif name == "ignore":
        if args:
            if args[0] != "empty_service":
                raise fail("unable to parse ignore value", args[0])
            cfg.ignore_empty_service = True
    elif name == "zonal":
        if args:
            raise fail("zonal: wrong argument count", " ".join(args))
        cfg.zonal = True
    elif name in _NOT_MODELLED:
        warnings.warn(
            CorefileWarning(f"{path}:{p.line}: kubernetes: {name} is not modelled, ignored"),
            stacklevel=3,
        )
    else:
        raise fail("unknown property", name)
