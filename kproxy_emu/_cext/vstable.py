"""IPVS virtual-server table, schedulers and connection table (Python API over
cext/ipvs_core.pxd), and ipsets for ``-m set`` (over cext/ipset_core.pxd).

The pure-Python twin is kproxy_emu.dataplane.ipvs_reference; both must agree packet for
packet. Build the input arrays with kproxy_emu.modes.ipvs.lower(state).

Compiled into the chain engine's extension (source: cext/vstable.pxi with ipvs_core.pxi
and ipset_core.pxi, included by cext/chains.pyx) so the engine's per-packet set and IPVS
calls inline; this module is its public name.
"""

from kproxy_emu._cext.chains import (  # noqa: F401 (this module is their public name)
    CONN_DTYPE,
    DEFAULT_TIMEOUTS,
    DEST_DTYPE,
    DEST_STATS_DTYPE,
    FLAG_PERSISTENT,
    FLAG_SCHED1,
    FLAG_SCHED2,
    IPSET_TYPES,
    MH_PRIMES,
    RESULT_DNAT,
    RESULT_DROP,
    RESULT_NOSCHED,
    RESULT_PASS,
    RESULT_REJECT,
    RESULT_SNAT,
    SCHEDULERS,
    SERVICE_DTYPE,
    STATS_KEYS,
    TCP_STATE_NAMES,
    IPSet,
    VirtualServerTable,
    conn_hash,
    dh_hash,
    mh_hash,
    parse_dirs,
    parse_entry,
    scheduler_code,
    sh_hash,
    svc_hash,
    table_seeds,
    tcp_transition,
)
