"""Stub for the compiled kproxy_emu._cext.netpolicy (source: cext/netpolicy.pyx): the
identity form of NetworkPolicy (Cilium's identities, ipcache and policy maps)."""

import numpy.typing as npt

from .pipeline import PolicyStage

class IdentityPolicy(PolicyStage):
    """Per-endpoint policy maps keyed by (peer identity, protocol, port prefix, direction);
    kproxy_emu/dataplane/policy_identity.py compiles the arrays."""

    @property
    def entries(self) -> int: ...
    def __init__(
        self,
        pod_ips: npt.ArrayLike,
        pod_ep: npt.ArrayLike,
        pod_ident: npt.ArrayLike,
        world_lo: npt.ArrayLike,
        world_ident: npt.ArrayLike,
        ep_flags: npt.ArrayLike,
        ep_plens: npt.ArrayLike,
        map_ep: npt.ArrayLike,
        map_ident: npt.ArrayLike,
        map_pw: npt.ArrayLike,
        map_rule: npt.ArrayLike,
    ) -> None: ...
    def address_of(self, ip: int) -> tuple[int, int]:
        """(endpoint or -1, identity) the ipcache gives an address."""
