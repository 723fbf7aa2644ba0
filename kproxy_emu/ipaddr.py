"""IP address and CIDR parsing the way kube-proxy does it.

kube-proxy parses with k8s.io/utils/net ParseIPSloppy / ParseCIDRSloppy: IPv4 octets may
carry leading zeros (read as decimal, ``172.30.0.041`` is ``172.30.0.41``) and addresses are
re-printed canonically; a CIDR is masked to its network (``203.0.113.5/25`` is
``203.0.113.0/25``). Python's ipaddress rejects leading zeros, so they are stripped first.
"""

from __future__ import annotations

import ipaddress
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def _strip_leading_zeros_v4(text: str) -> str:
    octets = text.split(".")
    if len(octets) != 4 or not all(o.isdigit() and o.isascii() for o in octets):
        return text
    return ".".join(str(int(o)) for o in octets)


def _unsloppy(text: str) -> str:
    """Remove IPv4 leading zeros, also in the IPv4 tail of an IPv6 address."""
    if ":" in text:
        head, sep, tail = text.rpartition(":")
        if "." in tail:
            return head + sep + _strip_leading_zeros_v4(tail)
        return text
    return _strip_leading_zeros_v4(text)


def ipv4_int(text: str) -> int:
    """A canonical dotted-quad IPv4 address as an integer (ValueError when it is not one).
    inet_pton is as strict as ipaddress (four decimal octets, no leading zeros) and about
    ten times faster: compilers convert millions of addresses at 1M services."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, TypeError):
        raise ValueError(f"not an IPv4 address: {text!r}") from None


def parse_ip(text: str) -> IPAddress:
    """Parse an IPv4 or IPv6 address; ValueError when it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"not an IP address: {text!r}")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if "%" in text:  # zone-qualified addresses are not valid in Kubernetes objects
        raise ValueError(f"not an IP address: {text!r}")
    return ipaddress.ip_address(_unsloppy(text))


def canonical_ip(text: str) -> str:
    """The address as kube-proxy prints it (ValueError when invalid)."""
    addr = parse_ip(text)
    canon = str(addr)
    return text if canon == text else canon


def parse_cidr(text: str) -> IPNetwork:
    """Parse a CIDR, masking host bits as Go's net.ParseCIDR does; ValueError when invalid."""
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"not a CIDR: {text!r}")
    addr, _, prefix = text.partition("/")
    if not prefix.isdigit():
        raise ValueError(f"not a CIDR: {text!r}")
    return ipaddress.ip_network(f"{_unsloppy(addr)}/{int(prefix)}", strict=False)


def canonical_cidr(text: str) -> str:
    return str(parse_cidr(text))


def ip_family(text: str) -> str:
    """'IPv4' or 'IPv6', as Kubernetes spells IP families."""
    return "IPv6" if parse_ip(text).version == 6 else "IPv4"
