# cython: language_level=3
"""The packet pipeline's contract with the mode engines (declarations; implementation in
pipeline.pyx, the recording helpers engines use in record.pxi).

One pipeline (``pipeline.run``) walks each packet through conntrack and the node's
netfilter hooks and calls the mode's ``Engine`` at every hook; an engine (chains.pyx:
iptables, IPVS; nftmaps.pyx: nftables) subclasses ``Engine`` and overrides its cdef
methods. Everything a packet carries between hooks is one ``pkt_state_t``.
"""
from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t

from packet cimport packet_t
from conntrack_core cimport ct_table_t


cdef enum:
    # netfilter hooks, in the order of struct nf_hook_ops' hooknum
    HOOK_PREROUTING = 0
    HOOK_INPUT = 1
    HOOK_FORWARD = 2
    HOOK_OUTPUT = 3
    HOOK_POSTROUTING = 4
    # what a hook did with the packet
    HV_CONTINUE = 0         # accepted: on to the next hook
    HV_DROP = 2
    HV_REJECT = 3
    HV_SENT_ON = 6          # IPVS at LOCAL_IN sent it to a real server (LOCAL_OUT follows)
    # ctstate bits the rules see (xt_conntrack XT_CONNTRACK_STATE_*)
    PS_CT_NEW = 8
    PS_CT_DNAT = 1024
    # recorder step kinds
    STEP_RULE = 1           # iptables: index = rule row
    STEP_NFT_RULE = 2       # nftables: index = the rule's first expression row
    STEP_IPVS_IN = 3        # ip_vs_in: index = hook, extra = result, value = endpoint
    STEP_IPVS_OUT = 4       # ip_vs_out on a reply: extra = result
    STEP_BPF_MAP = 5        # eBPF map lookup: index = map, extra = detail, value = result
    STEP_POLICY = 6         # NetworkPolicy decision: index = direction (0 egress, 1
                            # ingress), extra = POL_*, value = the allowing rule or -1
    STEP_POLICY_RULE = 7    # a rule of the policy chains (chains form): index = its row
    # STEP_POLICY extra: the side was not isolated (or not a pod), a rule allowed it,
    # no rule did
    POL_OPEN = 0
    POL_ALLOWED = 1
    POL_DENIED = 2
    # PolicyStage.check's answer: allowed, or which direction denied the new flow
    POLICY_PASS = 0
    POLICY_EGRESS_DENIED = 1
    POLICY_INGRESS_DENIED = 2
    MAX_DRAWS = 4096        # branch points one trace follows (a 4096-endpoint chain)
    DRAW_STATISTIC = 1      # xt_statistic --mode random: outcome 0 matches, 1 does not
    DRAW_NUMGEN = 2         # numgen random mod n: outcome k is the value k


ctypedef struct step_t:
    uint8_t kind
    uint8_t matched
    uint16_t extra
    int32_t index
    int32_t value


ctypedef struct draw_t:
    uint32_t kind           # DRAW_*
    uint32_t n              # outcomes: 2 for xt_statistic, N for numgen mod N
    uint32_t threshold      # xt_statistic: the probability scaled to 2^31
    uint32_t chosen


ctypedef struct recorder_t:
    # a trace's record of one packet; the batch path runs with no recorder (NULL)
    step_t* steps
    Py_ssize_t nsteps       # steps taken (only the first ``cap`` are stored)
    Py_ssize_t cap
    draw_t draws[MAX_DRAWS]
    int32_t ndraws
    int32_t forced[MAX_DRAWS]
    # nforced: -1: draws come from the stream; else draw k takes forced[k] (k < nforced)
    # or its first possible outcome
    int32_t nforced
    uint32_t ct_state       # conntrack's verdict on the packet (CTSTATE_* bits)
    int32_t ct_dir          # -1: no entry
    uint8_t ct_hit
    uint32_t ct_probes      # conntrack's share of the verdict's probes
    uint32_t lookups        # set, map and IPVS lookups (each once, however many probes)


ctypedef struct pkt_state_t:
    # the packet as the hooks see it, plus what the pipeline and the engine carry along
    uint32_t src
    uint32_t dst
    uint16_t sport
    uint16_t dport
    uint8_t proto
    uint8_t origin_bit
    uint8_t snat
    uint8_t random_fully    # the SNAT/MASQUERADE asked for --random-fully
    uint8_t skip_nat        # nf_nat runs only for a flow's first packet
    uint8_t has_oif         # nftables: the current hook has an output interface
    uint8_t pending         # a known flow's DNAT not applied yet (pend_dst/pend_dport)
    uint8_t sent_on         # IPVS moved it at LOCAL_IN: LOCAL_OUT's nat step is bound
    uint8_t ipvs_prop       # skb->ipvs_property: IPVS sent this packet on
    uint8_t ipvs_hit        # IPVS found the packet's connection
    uint8_t ipvs_vproto
    uint8_t ct_hit          # conntrack holds the flow (the eBPF engine: its own CT map)
    uint8_t snat_fixed      # the engine chose the SNAT port itself (snat_port)
    int8_t ct_dir           # its direction, -1 without entry
    uint16_t ipvs_vport
    uint16_t pend_dport
    uint16_t snat_port      # with snat_fixed: the source port the engine chose
    uint32_t pend_dst
    uint32_t ipvs_vaddr     # the IPVS connection's virtual service (ipvs_prop set)
    uint32_t snat_ip
    uint32_t mark
    uint32_t ctstate
    uint32_t rules
    uint32_t probes
    uint32_t lookups        # set, map and IPVS lookups (each once, however many probes)
    int32_t endpoint
    uint64_t rng
    double now
    recorder_t* rec         # NULL on the batch path


cdef class PolicyStage:
    """NetworkPolicy where a CNI enforces it: the first packet of each flow, after the
    hooks (kube-proxy's DNAT done), egress of the source then ingress of the destination.
    Subclasses (netpolicy.IdentityPolicy, chains.ChainPolicy) override ``check``; the
    pipeline counts what it answers."""
    cdef readonly uint64_t checked          # flows decided
    cdef readonly uint64_t egress_drops     # denied at the source's egress
    cdef readonly uint64_t ingress_drops    # denied at the destination's ingress

    cdef int check(self, const packet_t* p, pkt_state_t* st) noexcept nogil


cdef class Engine:
    """A mode's packet engine: what runs at each hook. Subclasses override the cdef
    methods; the base class holds the node's addresses."""
    cdef object _local_ips
    cdef const uint32_t* local_ips
    cdef Py_ssize_t n_local
    cdef readonly uint32_t masquerade_ip
    # is_local knows addresses beyond loopback and local_ips (IPVS: kube-ipvs0's); when
    # False the pipeline answers routing questions inline, without a call
    cdef bint more_local
    # bit h set: at hook h the engine runs nat chains only, so the pipeline skips the
    # call for a packet that skips nat (a known flow's); a fast path, never a semantic
    cdef uint8_t nat_only_hooks
    # the engine's known_flow is the base one (the stored DNAT applied at once) and its
    # after_hooks does nothing: the pipeline then makes neither call
    cdef bint plain_known_flow
    cdef bint no_after_hooks
    # > 0: the pipeline calls prefetch(packet, 0) for the packet this many rows ahead,
    # prefetch(packet, 1) half as far ahead and prefetch(packet, 2) a quarter, so the
    # engine can load what that packet will need in dependent steps (a bucket, then the
    # record it names, ...)
    cdef int prefetch_distance
    # the node's NetworkPolicy stage (None: none): pipeline.run uses it unless given one
    cdef public PolicyStage policy
    # ``set_profile``: ticks spent per stage (PROF_*), added up by pipeline.run; NULL: off
    cdef uint64_t* prof
    cdef object _prof

    cdef int hook(self, int hook, const packet_t* p, pkt_state_t* st) noexcept nogil
    cdef bint is_local(self, uint32_t ip) noexcept nogil
    cdef void known_flow(self, const packet_t* p, pkt_state_t* st) noexcept nogil
    cdef void after_hooks(self, const packet_t* p, pkt_state_t* st, int verdict) noexcept nogil
    cdef int begin(self) except -1
    cdef void prefetch(self, const packet_t* p, int stage) noexcept nogil


cdef class Rng:
    """The node's seeded random stream (xorshift64*), carried from batch to batch."""
    cdef uint64_t x


cdef class Recorder:
    cdef recorder_t r
    cdef object _steps


cdef class ConntrackTable:
    """The node's conntrack table (conntrack.pxi; public name kproxy_emu._cext.conntrack).
    The pipeline runs the per-packet functions of conntrack_core.pxi on ``tab``."""
    cdef ct_table_t tab
    cdef object _entries        # numpy buffers owning the memory behind tab's pointers
    cdef object _buckets
    cdef object _free
    cdef readonly dict timeouts
    cdef readonly uint64_t seed_value
