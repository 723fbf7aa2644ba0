"""Cluster DNS: what CoreDNS's ``kubernetes`` plugin answers for a Cluster (docs/dns.md).

Layer: imports ``model`` only (beside ``proxy`` and ``policy``)."""

from .records import Record, Response
from .resolver import POD_MODES, QTYPES, Resolver, parse_request

__all__ = ["POD_MODES", "QTYPES", "Record", "Resolver", "Response", "parse_request"]
