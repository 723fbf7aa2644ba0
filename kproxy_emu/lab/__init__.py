"""The real-kernel lab: load a node's rules into throwaway network namespaces, replay real
connections and compare the kernel's verdicts with the emulator's (needs root).

    from kproxy_emu.lab import verify
    report = verify(cluster, mode="iptables", packets=2000, seed=1)
    print(report.table()); assert report.ok

Modules: env (can the lab run here), topology (namespaces, links, safety), load (rules
into the node), replay (probes, listeners, conntrack), session (a lab for one node),
compare (verify and its report), policy (verify_policies: NetworkPolicy's
chains form in the kernel), calibrate (kernel costs for bench), relay (a real
userspace TCP relay: the userspace mode's calibration), node (the emulated node, a
Dataplane), cli (``verify`` and ``calibrate`` commands).
Importing this package needs neither root nor pyroute2; running a lab needs both.
"""

from .calibrate import calibrate
from .compare import VerifyReport, verify
from .env import LabUnavailable, check, unavailable_reason
from .session import Clients, NodeLab
from .topology import Lab, LabError, LabPlan

__all__ = [
    "Clients",
    "Lab",
    "LabError",
    "LabPlan",
    "LabUnavailable",
    "NodeLab",
    "VerifyReport",
    "calibrate",
    "check",
    "unavailable_reason",
    "verify",
]
