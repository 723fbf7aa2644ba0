# packet.pxi: helpers over the packet.pxd structs (included where used).
from packet cimport verdict_t, ACT_ACCEPT


cdef inline void verdict_reset(verdict_t* v) noexcept nogil:
    """The verdict of a packet nothing has touched yet: ACCEPT, no NAT, endpoint -1."""
    v.dnat_ip = 0
    v.snat_ip = 0
    v.dnat_port = 0
    v.snat_port = 0
    v.endpoint = -1
    v.rules = 0
    v.probes = 0
    v.action = ACT_ACCEPT
    v.ct_hit = 0
    v.lookups = 0
