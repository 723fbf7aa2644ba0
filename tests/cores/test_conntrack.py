"""Conntrack table: the Cython engine and its pure-Python twin, run side by side.

Every behavioural test runs against both implementations (fixture ``Table``); the
hypothesis tests drive both with the same random packet sequences and require identical
states, entries, NAT, probes, evictions and statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kproxy_emu import packets as P
from kproxy_emu._cext import conntrack as C
from kproxy_emu.dataplane import conntrack_ref as R

IMPLS = {"cython": C.ConntrackTable, "ref": R.ConntrackTable}

NEW, EST, INV, UNTR = C.STATE_NEW, C.STATE_ESTABLISHED, C.STATE_INVALID, C.STATE_UNTRACKED
DNAT, SNAT = C.STATE_DNAT, C.STATE_SNAT
ip = P.ip_to_u32

CLIENT, VIP, POD, NODE = "10.0.0.1", "10.96.0.10", "10.244.1.5", "192.168.0.2"


@pytest.fixture(params=list(IMPLS))
def Table(request):
    return IMPLS[request.param]


def pk(line: str, ts: float = 0.0, family: int = 4) -> np.ndarray:
    a = P.from_strings([line])
    a["ts"] = ts
    a["family"] = family
    return a


def track(t, line, ts=0.0, *, dnat=None, snat=None, endpoint=-1, mark=None):
    """One packet through track_batch; returns (state, entry, dir, verdict)."""
    a = pk(line, ts)
    v = P.empty_verdicts(1)
    if dnat:
        v["dnat_ip"], v["dnat_port"] = ip(dnat[0]), dnat[1]
    if snat:
        v["snat_ip"], v["snat_port"] = ip(snat[0]), snat[1]
    v["endpoint"] = endpoint
    s, e, d = np.zeros(1, np.uint32), np.zeros(1, np.int32), np.zeros(1, np.int8)
    marks = None if mark is None else np.array([mark], np.uint32)
    t.track_batch(a, v, s, e, d, marks)
    return int(s[0]), int(e[0]), int(d[0]), v[0]


def entry(t, idx):
    rows = t.entries()
    return rows[rows["id"] == idx][0]


# ---------------------------------------------------------------------------------------
# basics


def test_twin_shares_constants() -> None:
    for d in range(2):
        for idx in range(6):
            for old in range(10):
                assert C.tcp_transition(d, idx, old) == R.TCP_CONNTRACKS[d][idx][old]
    for flags in range(64):
        assert C.tcp_flag_index(flags) == R.tcp_flag_index(flags)
    rng = np.random.default_rng(3)
    for _ in range(200):
        a = [int(x) for x in rng.integers(0, 2**32, 2)] + [
            int(x) for x in rng.integers(0, 2**16, 2)
        ]
        seed = int(rng.integers(0, 2**63))
        assert C.tuple_hash(a[0], a[2], a[1], a[3], 6, seed) == R.tuple_hash(
            a[0], a[2], a[1], a[3], 6, seed
        )
    assert C.STATE_NEW == 8 and C.STATE_ESTABLISHED == 2 and C.STATE_INVALID == 1
    assert C.STATE_RELATED == 4 and C.STATE_DNAT == 1024 and C.STATE_SNAT == 512


def test_constructor_validation(Table) -> None:
    with pytest.raises(ValueError):
        Table(0, 1)
    with pytest.raises(ValueError):
        Table(10, -1)
    with pytest.raises(ValueError):
        Table(10, 1, buckets=0)
    with pytest.raises(TypeError):
        Table(10, 1, tcp_timeout_bogus=3)
    with pytest.raises(ValueError):
        Table(10, 1, udp_timeout=-1)
    t = Table(10, 1, **C.KUBE_PROXY_TIMEOUTS)
    assert t.timeouts["tcp_timeout_established"] == 86400
    assert t.timeouts["tcp_timeout_syn_sent"] == 120
    assert t.max_entries == 10 and t.buckets == 10 and len(t) == 0


def test_tcp_handshake_established_after_reply(Table) -> None:
    t = Table(64, 7)
    s, e, d, v = track(
        t, f"tcp {CLIENT}:40000 -> {VIP}:80 flags=S", 0.0, dnat=(POD, 8080), endpoint=3
    )
    assert (s, e, d) == (NEW | DNAT, 0, 0)
    assert not v["ct_hit"] and v["probes"] == 0
    row = entry(t, 0)
    assert row["state"] == 1 and row["expires"] == 120.0  # SYN_SENT, 2 min
    assert not row["status"] & C.STATUS_SEEN_REPLY
    # SYN retransmit: still NEW (no reply yet), a hit
    s, e, d, v = track(t, f"tcp {CLIENT}:40000 -> {VIP}:80 flags=S", 1.0)
    assert (s, e, d) == (NEW | DNAT, 0, 0) and v["ct_hit"]
    # SYN/ACK from the endpoint: reply direction, ESTABLISHED ctstate, SYN_RECV
    s, e, d, v = track(t, f"tcp {POD}:8080 -> {CLIENT}:40000 flags=SA", 1.5)
    assert (s, e, d) == (EST | DNAT, 0, 1)
    row = entry(t, 0)
    assert row["state"] == 2 and row["expires"] == 61.5
    assert row["status"] & C.STATUS_SEEN_REPLY and not row["status"] & C.STATUS_ASSURED
    # ACK: ESTABLISHED + ASSURED, 5 days by default
    s, e, d, v = track(t, f"tcp {CLIENT}:40000 -> {VIP}:80 flags=A", 2.0)
    assert (s, e, d) == (EST | DNAT, 0, 0)
    row = entry(t, 0)
    assert row["state"] == 3 and row["status"] & C.STATUS_ASSURED
    assert row["expires"] == 2.0 + 432000
    assert v["endpoint"] == 3 and v["dnat_ip"] == ip(POD) and v["dnat_port"] == 8080
    assert v["action"] == P.Action.DNAT


def test_kube_proxy_established_timeout(Table) -> None:
    t = Table(8, 1, **C.KUBE_PROXY_TIMEOUTS)
    track(t, f"tcp {CLIENT}:1 -> {VIP}:80 flags=S", 0)
    track(t, f"tcp {VIP}:80 -> {CLIENT}:1 flags=SA", 0)
    track(t, f"tcp {CLIENT}:1 -> {VIP}:80 flags=A", 10)
    assert entry(t, 0)["expires"] == 10 + 86400
    assert track(t, f"tcp {CLIENT}:1 -> {VIP}:80 flags=A", 10 + 86399.5)[1] == 0
    # refreshed at 86409.5; dead exactly one timeout later: the ACK is picked up as a new
    # connection (tcp_loose) in the freed slot
    assert track(t, f"tcp {CLIENT}:1 -> {VIP}:80 flags=A", 86409.5 + 86400)[:2] == (NEW, 0)
    assert t.stats()["expired"] == 1 and t.stats()["inserted"] == 2


def test_reply_is_un_natted(Table) -> None:
    t = Table(64, 7)
    s, e, d, v = track(
        t,
        f"tcp {CLIENT}:40000 -> {VIP}:80 flags=S",
        0.0,
        dnat=(POD, 8080),
        snat=(NODE, 61000),
        endpoint=5,
    )
    assert s == NEW | DNAT | SNAT
    row = entry(t, e)
    assert (row["reply_src_ip"], row["reply_src_port"]) == (ip(POD), 8080)
    assert (row["reply_dst_ip"], row["reply_dst_port"]) == (ip(NODE), 61000)
    assert (row["dnat_ip"], row["dnat_port"], row["snat_ip"], row["snat_port"]) == (
        ip(POD),
        8080,
        ip(NODE),
        61000,
    )
    # the endpoint answers the masquerade address: source back to the VIP, destination
    # back to the client
    s, e2, d, v = track(t, f"tcp {POD}:8080 -> {NODE}:61000 flags=SA", 0.5)
    assert (e2, d) == (e, 1) and s == EST | DNAT | SNAT
    assert (v["snat_ip"], v["snat_port"]) == (ip(VIP), 80)
    assert (v["dnat_ip"], v["dnat_port"]) == (ip(CLIENT), 40000)
    assert v["ct_hit"] and v["endpoint"] == 5
    assert t.translate(e, 1) == (ip(VIP), 80, ip(CLIENT), 40000)
    assert t.translate(e, 0) == (ip(NODE), 61000, ip(POD), 8080)
    # original direction keeps being NATed
    s, e3, d, v = track(t, f"tcp {CLIENT}:40000 -> {VIP}:80 flags=A", 1.0)
    assert (e3, d) == (e, 0)
    assert (v["dnat_ip"], v["dnat_port"], v["snat_ip"], v["snat_port"]) == (
        ip(POD),
        8080,
        ip(NODE),
        61000,
    )
    # a packet from the endpoint to the client's real address is another flow
    s, e4, d, v = track(t, f"tcp {POD}:8080 -> {CLIENT}:40000 flags=A", 1.0)
    assert e4 != e


def test_no_nat_entry_has_no_nat_bits(Table) -> None:
    t = Table(8, 1)
    s, e, d, v = track(t, f"udp {CLIENT}:5000 -> {POD}:53", 0)
    assert s == NEW
    row = entry(t, e)
    assert row["dnat_ip"] == 0 and row["snat_ip"] == 0
    assert not row["status"] & (C.STATUS_DST_NAT | C.STATUS_SRC_NAT)
    s, e2, d, v = track(t, f"udp {POD}:53 -> {CLIENT}:5000", 0.1)
    assert (s, e2, d) == (EST, e, 1)
    assert v["action"] == P.Action.ACCEPT and v["dnat_ip"] == 0 and v["snat_ip"] == 0


# ---------------------------------------------------------------------------------------
# UDP, expiry


def test_udp_stream_timeout(Table) -> None:
    t = Table(8, 1)
    fwd, rev = f"udp {CLIENT}:5000 -> {VIP}:53", f"udp {POD}:53 -> {CLIENT}:5000"
    s, e, _, _ = track(t, fwd, 100.0, dnat=(POD, 53))
    assert entry(t, e)["expires"] == 130.0  # unreplied: 30 s
    s, _, d, _ = track(t, fwd, 101.0)
    assert s == NEW | DNAT and entry(t, e)["expires"] == 131.0
    s, _, d, _ = track(t, rev, 101.5)  # the reply itself: 30 s
    assert (s, d) == (EST | DNAT, 1) and entry(t, e)["expires"] == 131.5
    assert not entry(t, e)["status"] & C.STATUS_ASSURED
    s, _, _, _ = track(t, fwd, 102.0)  # within 2 s of creation
    assert s == EST | DNAT and entry(t, e)["expires"] == 132.0
    assert not entry(t, e)["status"] & C.STATUS_ASSURED
    track(t, rev, 102.5)  # 2.5 s after: a stream
    row = entry(t, e)
    assert row["expires"] == 102.5 + 120 and row["status"] & C.STATUS_ASSURED


def test_udp_stream_exactly_two_seconds_is_not_yet_a_stream(Table) -> None:
    t = Table(8, 1)
    track(t, f"udp {CLIENT}:5000 -> {POD}:53", 0.0)
    track(t, f"udp {POD}:53 -> {CLIENT}:5000", 1.0)
    track(t, f"udp {CLIENT}:5000 -> {POD}:53", 2.0)  # time_after is strict
    assert entry(t, 0)["expires"] == 32.0
    track(t, f"udp {CLIENT}:5000 -> {POD}:53", 2.001)
    assert entry(t, 0)["expires"] == pytest.approx(122.001)


@pytest.mark.parametrize("delta, alive", [(29.999, True), (30.0, False), (30.5, False)])
def test_expiry_boundary(Table, delta, alive) -> None:
    """Dead once the timeout has passed: at exactly created + timeout the entry is gone
    (nf_ct_is_expired: timeout - now <= 0)."""
    t = Table(8, 1)
    track(t, f"udp {CLIENT}:5000 -> {POD}:53", 10.0)
    s, e, _d, _ = track(t, f"udp {CLIENT}:5000 -> {POD}:53", 10.0 + delta)
    assert (t.stats()["expired"] == 0) is alive
    assert t.stats()["inserted"] == (1 if alive else 2)
    if not alive:
        # the lookup collected the dead entry and a new one took slot 0 again
        assert s == NEW and e == 0 and t.stats()["expired"] == 1 and len(t) == 1
        assert entry(t, 0)["expires"] == 10.0 + delta + 30


def test_expire_sweep_and_lazy_len(Table) -> None:
    t = Table(16, 1)
    for i in range(5):
        track(t, f"udp {CLIENT}:{5000 + i} -> {POD}:53", float(i))
    assert len(t) == 5
    assert t.expire(30.999) == 1  # created at 0 -> expires 30; 1 -> 31; 2 -> 32
    assert t.expire(31.0) == 1  # exactly at the boundary: dead
    assert len(t) == 3 and t.stats()["expired"] == 2
    assert sorted(t.entries()["id"].tolist()) == [2, 3, 4]
    # freed slots are reused last-freed first
    assert track(t, f"udp {CLIENT}:6000 -> {POD}:53", 40.0)[1] == 1


# ---------------------------------------------------------------------------------------
# TCP state machine details


def test_tcp_invalid_and_loose(Table) -> None:
    t = Table(8, 1)
    for flags in ("F", "R", "SA", "none", "FA"):
        assert track(t, f"tcp {CLIENT}:1 -> {POD}:80 flags={flags}", 0)[:3] == (INV, -1, -1)
    assert len(t) == 0 and t.stats()["invalid"] == 5
    # tcp_loose=1 (default): a bare ACK picks the connection up as ESTABLISHED
    s, e, _d, _ = track(t, f"tcp {CLIENT}:1 -> {POD}:80 flags=A", 0)
    assert (s, e) == (NEW, 0) and entry(t, 0)["state"] == 3
    assert entry(t, 0)["expires"] == 432000
    track(t, f"tcp {POD}:80 -> {CLIENT}:1 flags=A", 1)
    assert not entry(t, 0)["status"] & C.STATUS_ASSURED  # reply not yet seen before
    track(t, f"tcp {CLIENT}:1 -> {POD}:80 flags=A", 2)
    assert entry(t, 0)["status"] & C.STATUS_ASSURED
    strict = Table(8, 1, tcp_loose=False)
    assert track(strict, f"tcp {CLIENT}:1 -> {POD}:80 flags=A", 0)[:2] == (INV, -1)
    assert len(strict) == 0


def test_tcp_invalid_transition_leaves_entry(Table) -> None:
    t = Table(8, 1)
    track(t, f"tcp {CLIENT}:1 -> {POD}:80 flags=S", 0)
    # ACK in SYN_SENT from the client: sIV
    assert track(t, f"tcp {CLIENT}:1 -> {POD}:80 flags=A", 5)[:3] == (INV, -1, -1)
    row = entry(t, 0)
    assert row["state"] == 1 and row["expires"] == 120.0
    # SYN/ACK from the client: sIV too; ACK from the server in SYN_SENT: ignored (sIG)
    assert track(t, f"tcp {CLIENT}:1 -> {POD}:80 flags=SA", 6)[0] == INV
    s, e, d, _ = track(t, f"tcp {POD}:80 -> {CLIENT}:1 flags=A", 7)
    assert (s, e, d) == (EST, 0, 1) and entry(t, 0)["expires"] == 120.0


def test_tcp_close_sequence_and_reopen(Table) -> None:
    t = Table(8, 1)
    c2s, s2c = f"tcp {CLIENT}:1 -> {POD}:80", f"tcp {POD}:80 -> {CLIENT}:1"
    track(t, c2s + " flags=S", 0)
    track(t, s2c + " flags=SA", 0)
    track(t, c2s + " flags=A", 0)
    expect = [
        (c2s + " flags=FA", 4, 120),
        (s2c + " flags=A", 5, 60),
        (s2c + " flags=FA", 6, 30),
        (c2s + " flags=A", 7, 120),
    ]
    for k, (line, state, timeout) in enumerate(expect, start=1):
        s, e, d, _ = track(t, line, float(k))
        assert e == 0 and s == EST
        row = entry(t, 0)
        assert (row["state"], row["expires"]) == (state, k + timeout)
    # a new SYN on the same tuple in TIME_WAIT: old entry killed, a new connection
    s, e, d, _ = track(t, c2s + " flags=S", 10.0)
    assert (s, e, d) == (NEW, 0, 0)
    row = entry(t, 0)
    assert row["state"] == 1 and not row["status"] & C.STATUS_SEEN_REPLY
    assert len(t) == 1 and t.stats()["inserted"] == 2


def test_tcp_rst(Table) -> None:
    t = Table(8, 1, **C.KUBE_PROXY_TIMEOUTS)
    c2s, s2c = f"tcp {CLIENT}:1 -> {POD}:80", f"tcp {POD}:80 -> {CLIENT}:1"
    # RST as the only answer: the entry dies at once
    track(t, c2s + " flags=S", 0)
    s, e, d, _ = track(t, s2c + " flags=R", 1.0)
    assert (s, e, d) == (EST, 0, 1)
    assert track(t, c2s + " flags=A", 1.0)[:2] == (NEW, 0)  # picked up afresh
    assert t.stats()["expired"] == 1
    # RST in an established connection: CLOSE, 10 s
    t2 = Table(8, 1)
    track(t2, c2s + " flags=S", 0)
    track(t2, s2c + " flags=SA", 0)
    track(t2, c2s + " flags=A", 0)
    track(t2, c2s + " flags=R", 5.0)
    assert (entry(t2, 0)["state"], entry(t2, 0)["expires"]) == (8, 15.0)


def test_sctp_and_generic(Table) -> None:
    t = Table(8, 1)
    fwd, rev = f"sctp {CLIENT}:1 -> {POD}:9", f"sctp {POD}:9 -> {CLIENT}:1"
    track(t, fwd, 0)
    assert (entry(t, 0)["state"], entry(t, 0)["expires"]) == (2, 3.0)
    track(t, rev, 0.5)
    assert entry(t, 0)["state"] == 2
    track(t, fwd, 1.0)
    assert (entry(t, 0)["state"], entry(t, 0)["expires"]) == (3, 4.0)
    track(t, rev, 1.5)
    row = entry(t, 0)
    assert row["state"] == 4 and row["expires"] == 211.5 and row["status"] & C.STATUS_ASSURED
    s, e, _d, _ = track(t, f"icmp {CLIENT} -> {POD}", 0)
    assert s == NEW and entry(t, e)["expires"] == 30.0
    assert track(t, f"icmp {POD} -> {CLIENT}", 1)[:3] == (EST, e, 1)


def test_untracked_family(Table) -> None:
    t = Table(8, 1)
    a = pk(f"tcp {CLIENT}:1 -> {POD}:80 flags=S", 0, family=6)
    v = P.empty_verdicts(1)
    s, e, d = np.zeros(1, np.uint32), np.zeros(1, np.int32), np.zeros(1, np.int8)
    t.track_batch(a, v, s, e, d)
    assert (s[0], e[0], d[0]) == (UNTR, -1, -1) and len(t) == 0


# ---------------------------------------------------------------------------------------
# create / confirm / abort, clashes, peek


def test_create_confirm_abort(Table) -> None:
    t = Table(4, 1)
    a = pk(f"tcp {CLIENT}:1 -> {VIP}:80 flags=S", 0)
    assert t.lookup(a) == (NEW, -1, -1, 0)
    e = t.create(a)
    assert e == 0 and len(t) == 1 and t.lookup(a)[1] == -1  # unconfirmed: not hashed
    assert entry(t, 0)["confirmed"] == False  # noqa: E712
    t.abort(e)
    assert len(t) == 0
    e = t.create(a)
    assert t.confirm(e, dnat_ip=ip(POD), dnat_port=8080, endpoint=2, mark=0x4000, now=0) == (0, 0)
    row = entry(t, 0)
    assert row["confirmed"] and row["mark"] == 0x4000 and row["endpoint"] == 2
    st, idx, d, probes = t.lookup(a)
    assert (st, idx, d) == (NEW | DNAT, 0, 0) and probes >= 1
    with pytest.raises(ValueError):
        t.confirm(0)
    assert t.create(pk(f"tcp {CLIENT}:1 -> {VIP}:80 flags=F", 0)) == C.ERR_INVALID
    # another client NATed onto the same reply tuple: insert fails
    e2 = t.create(pk(f"tcp {CLIENT}:2 -> {VIP}:80 flags=S", 0))
    r, _ = t.confirm(e2, dnat_ip=ip(POD), dnat_port=8080, snat_ip=ip(CLIENT), snat_port=1, now=0)
    assert r == C.ERR_CLASH and t.stats()["insert_failed"] == 1 and len(t) == 1
    # update() runs the tracker for a known entry/direction
    assert t.update(0, 1, pk(f"tcp {POD}:8080 -> {CLIENT}:1 flags=SA", 1)) == EST
    assert entry(t, 0)["state"] == 2


def test_lookup_without_update_changes_nothing(Table) -> None:
    t = Table(8, 1)
    track(t, f"tcp {CLIENT}:1 -> {POD}:80 flags=S", 0)
    before = t.entries()
    a = pk(f"tcp {POD}:80 -> {CLIENT}:1 flags=SA", 1)
    s, e, d = np.zeros(1, np.uint32), np.zeros(1, np.int32), np.zeros(1, np.int8)
    t.lookup_batch(a, s, e, d, update=False)
    assert (s[0], e[0], d[0]) == (EST, 0, 1)
    assert np.array_equal(t.entries(), before)
    t.lookup_batch(a, s, e, d)
    assert entry(t, 0)["state"] == 2


# ---------------------------------------------------------------------------------------
# table full: early_drop


def _assured_tcp(t, port, ts=0.0):
    track(t, f"tcp {CLIENT}:{port} -> {POD}:80 flags=S", ts)
    track(t, f"tcp {POD}:80 -> {CLIENT}:{port} flags=SA", ts)
    track(t, f"tcp {CLIENT}:{port} -> {POD}:80 flags=A", ts)


def test_table_full_early_drops_unassured(Table) -> None:
    t = Table(3, 1, buckets=1)
    _assured_tcp(t, 1)
    _assured_tcp(t, 2)
    track(t, f"udp {CLIENT}:7 -> {POD}:53", 0)  # unassured
    assert len(t) == 3
    s, e, _d, v = track(t, f"tcp {CLIENT}:3 -> {POD}:80 flags=S", 1.0)
    assert s == NEW and e == 2 and v["action"] != P.Action.DROP
    assert t.stats()["early_drop"] == 1 and t.stats()["drop"] == 0
    assert sorted(t.entries()["orig_src_port"].tolist()) == [1, 2, 3]


def test_table_full_all_assured_drops(Table) -> None:
    t = Table(2, 1, buckets=1)
    _assured_tcp(t, 1)
    _assured_tcp(t, 2)
    s, e, _d, v = track(t, f"tcp {CLIENT}:3 -> {POD}:80 flags=S", 1.0)
    assert v["action"] == P.Action.DROP and e == -1 and s == NEW
    assert t.stats()["drop"] == 1 and t.stats()["early_drop"] == 0 and len(t) == 2
    # existing flows still pass
    assert track(t, f"tcp {CLIENT}:1 -> {POD}:80 flags=A", 2.0)[1] >= 0
    # invalid packets are dropped too when full (the kernel allocates before tcp_new)
    assert track(t, f"tcp {CLIENT}:9 -> {POD}:80 flags=F", 2.0)[3]["action"] == P.Action.DROP
    # an expired entry found by the scan makes room
    s, e, _d, v = track(t, f"tcp {CLIENT}:3 -> {POD}:80 flags=S", 2.0 + 432000)
    assert v["action"] != P.Action.DROP and e >= 0


def test_early_drop_range_is_eight_buckets(Table) -> None:
    """Only entries with a node in the new tuple's bucket or the 7 after it can go."""
    seed, nb = 11, 64
    t = Table(2, seed, buckets=nb)

    def bucket(sip, sport, dip, dport, proto=17):
        return (R.tuple_hash(sip, sport, dip, dport, proto, seed) * nb) >> 32

    c, p = ip(CLIENT), ip(POD)
    track(t, f"udp {CLIENT}:1000 -> {POD}:53", 0)
    track(t, f"udp {CLIENT}:1001 -> {POD}:53", 0)
    nodes = {
        0: {bucket(c, 1000, p, 53), bucket(p, 53, c, 1000)},
        1: {bucket(c, 1001, p, 53), bucket(p, 53, c, 1001)},
    }
    assert (t.chain_lengths() > 0).sum() == len(nodes[0] | nodes[1])

    def window(port):
        b = bucket(c, port, p, 53)
        return {(b + i) % nb for i in range(8)}

    far = next(q for q in range(2000, 60000) if not window(q) & (nodes[0] | nodes[1]))
    _s, _e, _d, v = track(t, f"udp {CLIENT}:{far} -> {POD}:53", 1.0)
    assert v["action"] == P.Action.DROP and t.stats()["drop"] == 1 and len(t) == 2
    # a tuple whose window reaches only entry 1's nodes evicts exactly entry 1
    near = next(q for q in range(2000, 60000) if window(q) & nodes[1] and not window(q) & nodes[0])
    _s, _e, _d, v = track(t, f"udp {CLIENT}:{near} -> {POD}:53", 1.0)
    assert v["action"] != P.Action.DROP and t.stats()["early_drop"] == 1
    assert sorted(t.entries()["orig_src_port"].tolist()) == sorted([1000, near])


# ---------------------------------------------------------------------------------------
# probes, determinism


def test_probes_count_chain_nodes(Table) -> None:
    t = Table(8, 1, buckets=1)  # one chain: newest nodes first, reply before orig
    track(t, f"udp {CLIENT}:1 -> {POD}:53", 0)  # chain: A.r A.o
    track(t, f"udp {CLIENT}:2 -> {POD}:53", 0)  # miss walked 2 nodes; chain: B.r B.o A.r A.o
    assert t.stats()["searched"] == 2  # lookups only (confirm's clash checks not)
    a = pk(f"udp {CLIENT}:1 -> {POD}:53", 1)
    b = pk(f"udp {CLIENT}:2 -> {POD}:53", 1)
    r = pk(f"udp {POD}:53 -> {CLIENT}:1", 1)
    m = pk(f"udp {CLIENT}:3 -> {POD}:53", 1)
    assert t.lookup(a)[3] == 4
    assert t.lookup(b)[3] == 2
    assert t.lookup(r)[3] == 3
    assert t.lookup(m)[3] == 4
    v = P.empty_verdicts(1)
    v["probes"] = 10
    assert t.track_batch(a, v) == 4 and v["probes"][0] == 14


def test_confirm_probes_in_track_batch(Table) -> None:
    t = Table(8, 1, buckets=1)
    v = P.empty_verdicts(2)
    a = np.concatenate([pk(f"udp {CLIENT}:1 -> {POD}:53", 0), pk(f"udp {CLIENT}:2 -> {POD}:53", 0)])
    t.track_batch(a, v)
    # first: miss on an empty chain (0) + 2 clash lookups on it (0); second: miss walks 2,
    # clash lookups walk 2 each
    assert v["probes"].tolist() == [0, 6]


def _random_packets(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = P.empty_packets(n)
    a["ts"] = np.cumsum(rng.exponential(0.5, n))
    a["src_ip"] = ip(CLIENT) + rng.integers(0, 4, n)
    a["dst_ip"] = ip(VIP)
    a["src_port"] = 40000 + rng.integers(0, 20, n)
    a["dst_port"] = 80
    a["proto"] = rng.choice([6, 17], n)
    a["tcp_flags"] = np.where(a["proto"] == 6, rng.choice([2, 16, 18, 1, 4], n), 0)
    a["family"] = 4
    return a


def test_deterministic_with_seed() -> None:
    a = _random_packets(5, 2000)
    out = []
    for seed in (9, 9, 10):
        t = C.ConntrackTable(50, seed, buckets=16)
        v = P.empty_verdicts(len(a))
        v["dnat_ip"] = ip(POD)
        t.track_batch(a, v)
        out.append((v.tolist(), t.entries().tobytes(), t.stats(), t.chain_lengths().tolist()))
    assert out[0] == out[1]
    assert out[0][3] != out[2][3]


# ---------------------------------------------------------------------------------------
# the twin and the engine agree on random traffic

FLAGS = st.sampled_from([2, 18, 16, 1, 17, 4, 20, 0, 8, 24])


@st.composite
def traffic(draw):
    n = draw(st.integers(1, 120))
    clients = draw(st.integers(1, 4))
    ports = draw(st.integers(1, 6))
    rows = []
    ts = 0.0
    for _ in range(n):
        ts += draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 10.0, 29.0, 30.0, 100.0, 500.0]))
        c = draw(st.integers(0, clients - 1))
        port = 40000 + draw(st.integers(0, ports - 1))
        proto = draw(st.sampled_from([6, 6, 17, 17, 132, 1, 47]))
        reply = draw(st.booleans())
        family = draw(st.sampled_from([4] * 15 + [6]))
        op = draw(st.sampled_from(["track"] * 8 + ["peek", "expire"]))
        rows.append((ts, c, port, proto, reply, draw(FLAGS), family, op))
    max_entries = draw(st.integers(1, 12))
    buckets = draw(st.integers(1, 16))
    seed = draw(st.integers(0, 2**64 - 1))
    nat = draw(st.sampled_from(["dnat", "dnat+snat", "none"]))
    return rows, max_entries, buckets, seed, nat


def _packet_for(row, nat):
    ts, c, port, proto, reply, flags, family, _op = row
    a = P.empty_packets(1)
    client = ip(CLIENT) + c
    sport = 0 if proto in (1, 47) else port
    dport = 0 if proto in (1, 47) else 80
    if not reply:
        src, dst, s_port, d_port = client, ip(VIP), sport, dport
    else:  # what the endpoint sends back under this NAT
        src, s_port = ip(POD), (8080 if dport else 0)
        if nat == "none":
            src, s_port = ip(VIP), dport
        dst, d_port = client, sport
        if nat == "dnat+snat":
            dst, d_port = ip(NODE), (sport + 1000 if sport else 0)
    a[0] = (ts, src, dst, s_port, d_port, proto, flags if proto == 6 else 0, 0, family)
    v = P.empty_verdicts(1)
    if nat != "none":
        v["dnat_ip"], v["dnat_port"] = ip(POD), (8080 if dport else 0)
        v["endpoint"] = c
    if nat == "dnat+snat":
        v["snat_ip"], v["snat_port"] = ip(NODE), (sport + 1000 if sport else 0)
    return a, v


@given(traffic())
def test_twin_agrees_with_engine(case) -> None:
    rows, max_entries, buckets, seed, nat = case
    tables = [
        C.ConntrackTable(max_entries, seed, buckets=buckets),
        R.ConntrackTable(max_entries, seed, buckets=buckets),
    ]
    for row in rows:
        a, v0 = _packet_for(row, nat)
        results = []
        for t in tables:
            op = row[-1]
            if op == "expire":
                results.append(t.expire(row[0]))
            elif op == "peek":
                s, e, d, pr = (
                    np.zeros(1, np.uint32),
                    np.zeros(1, np.int32),
                    np.zeros(1, np.int8),
                    np.zeros(1, np.uint32),
                )
                total = t.lookup_batch(a, s, e, d, pr, update=False)
                results.append((total, s.tolist(), e.tolist(), d.tolist(), pr.tolist()))
            else:
                v = v0.copy()
                s, e, d = np.zeros(1, np.uint32), np.zeros(1, np.int32), np.zeros(1, np.int8)
                marks = np.array([row[1] * 7], np.uint32)
                total = t.track_batch(a, v, s, e, d, marks)
                results.append((total, v.tolist(), s.tolist(), e.tolist(), d.tolist()))
            results.append((len(t), t.stats(), t.chain_lengths().tolist()))
        assert results[0] == results[2], row
        assert results[1] == results[3], row
    assert tables[0].entries().tobytes() == tables[1].entries().tobytes()


def test_batch_equals_one_by_one() -> None:
    a = _random_packets(8, 3000)
    t1, t2 = C.ConntrackTable(64, 3, buckets=8), R.ConntrackTable(64, 3, buckets=8)
    v1, v2 = P.empty_verdicts(len(a)), P.empty_verdicts(len(a))
    v1["dnat_ip"] = v2["dnat_ip"] = ip(POD)
    s1, s2 = np.zeros(len(a), np.uint32), np.zeros(len(a), np.uint32)
    assert t1.track_batch(a, v1, s1) == t2.track_batch(a, v2, s2)
    assert v1.tolist() == v2.tolist() and s1.tolist() == s2.tolist()
    assert t1.stats() == t2.stats() and t1.stats()["early_drop"] > 0
    assert t1.entries().tobytes() == t2.entries().tobytes()


def test_snapshot_restore_gives_the_table_back() -> None:
    """What a non-committing trace relies on: restore undoes every change since snapshot
    (entries, chains, free slots, counters), and refuses another table's snapshot."""
    t = C.ConntrackTable(64, 3, buckets=16)
    first = _random_packets(1, 40)
    v = P.empty_verdicts(40)
    t.track_batch(first, v)
    before = (t.entries().tobytes(), t.stats(), len(t), t.chain_lengths().tolist())
    snap = t.snapshot()
    t.track_batch(_random_packets(2, 60), P.empty_verdicts(60))
    assert t.entries().tobytes() != before[0]
    t.restore(snap)
    assert (t.entries().tobytes(), t.stats(), len(t), t.chain_lengths().tolist()) == before
    # and it keeps working as the original would
    twin = C.ConntrackTable(64, 3, buckets=16)
    twin.track_batch(first, P.empty_verdicts(40))
    more = _random_packets(4, 30)
    a, b = P.empty_verdicts(30), P.empty_verdicts(30)
    t.track_batch(more, a)
    twin.track_batch(more, b)
    assert a.tobytes() == b.tobytes() and t.entries().tobytes() == twin.entries().tobytes()
    with pytest.raises(ValueError):
        twin.restore(snap)
    with pytest.raises(ValueError):
        t.restore(("not", "a", "snapshot"))


def test_output_length_checked(Table) -> None:
    t = Table(4, 1)
    a = _random_packets(1, 3)
    with pytest.raises(ValueError):
        t.lookup_batch(a, np.zeros(2, np.uint32), np.zeros(3, np.int32), np.zeros(3, np.int8))
    with pytest.raises(ValueError):
        t.track_batch(a, P.empty_verdicts(2))
