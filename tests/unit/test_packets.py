"""kproxy_emu.packets: text I/O, IPv4 conversion, traffic synthesis."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kproxy_emu import packets as P
from kproxy_emu.errors import InputError

# --------------------------------------------------------------------------------------
# a tiny pure-Python reference parser (the oracle for the compiled one)

_FLAG_BITS = {"f": 1, "s": 2, "r": 4, "p": 8, "a": 16}


def _ref_ip(text: str) -> int:
    parts = text.split(".")
    assert len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts), text
    v = 0
    for p in parts:
        v = v * 256 + int(p)
    return v


def ref_parse(line: str, default_origin: int = 255) -> tuple:
    m = re.fullmatch(r"\s*(\S+)\s+(\S+?)\s*->\s*(\S+)((?:\s+\S+)*)\s*", line)
    assert m, line
    proto = P.PROTO_NUMBERS[m.group(1).lower()]
    ends = []
    for tok in (m.group(2), m.group(3)):
        if proto == 1:
            ends.append((_ref_ip(tok), 0))
        else:
            ip, port = tok.split(":")
            assert int(port) <= 65535
            ends.append((_ref_ip(ip), int(port)))
    flags = 2 if proto == 6 else 0
    origin = default_origin
    for opt in m.group(4).split():
        key, val = opt.split("=")
        if key.lower() == "flags":
            flags = 0 if val.lower() == "none" else sum({_FLAG_BITS[c] for c in val.lower()})
        else:
            origin = P.ORIGIN_NAMES.index(val.lower())
    return (ends[0][0], ends[1][0], ends[0][1], ends[1][1], proto, flags, origin, 4)


def as_tuples(arr: np.ndarray) -> list[tuple]:
    return [tuple(int(r[f]) for f in P.PACKET_DTYPE.names[1:]) for r in arr]


# --------------------------------------------------------------------------------------
# parsing


def test_parse_basic() -> None:
    pk = P.parse("tcp 10.0.0.2:1234 -> 172.30.0.41:80")
    assert pk.shape == (1,) and pk.dtype == P.PACKET_DTYPE
    r = pk[0]
    assert (r["src_ip"], r["dst_ip"]) == (0x0A000002, (172 << 24) | (30 << 16) | 41)
    assert (r["src_port"], r["dst_port"], r["proto"]) == (1234, 80, 6)
    assert r["tcp_flags"] == P.TcpFlag.SYN
    assert r["origin"] == P.Origin.AUTO and r["family"] == 4 and r["ts"] == 0.0


def test_parse_variants() -> None:
    pk = P.from_strings(
        [
            "UDP\t10.0.0.2:53->10.96.0.10:53",
            "  Sctp 1.1.1.1:0  ->  2.2.2.2:65535   ",
            "icmp 1.1.1.1 -> 2.2.2.2",
            "tcp 010.000.0.01:1 -> 1.1.1.1:2 flags=FA from=External",
            "tcp 1.1.1.1:1 -> 1.1.1.1:2 flags=none from=host\r",
        ],
        origin="pod",
    )
    assert pk["proto"].tolist() == [17, 132, 1, 6, 6]
    assert pk["src_port"].tolist() == [53, 0, 0, 1, 1]
    assert pk["dst_port"].tolist() == [53, 65535, 0, 2, 2]
    assert pk["src_ip"][3] == 0x0A000001  # leading zeros read as decimal (ParseIPSloppy)
    assert pk["tcp_flags"].tolist() == [0, 0, 0, 17, 0]
    assert pk["origin"].tolist() == [0, 0, 0, 1, 2]


def test_origin_argument() -> None:
    line = "tcp 1.1.1.1:1 -> 2.2.2.2:2"
    assert P.from_strings([line])["origin"][0] == P.Origin.AUTO
    assert P.from_strings([line], origin="host")["origin"][0] == P.Origin.HOST
    assert P.from_strings([line], origin=P.Origin.EXTERNAL)["origin"][0] == 1
    assert P.from_strings([line + " from=pod"], origin="host")["origin"][0] == 0
    with pytest.raises(InputError, match=r"origin.*'mars'"):
        P.from_strings([line], origin="mars")


def test_timestamps() -> None:
    lines = ["tcp 1.1.1.1:1 -> 2.2.2.2:2"] * 3
    assert P.from_strings(lines, ts=2.5)["ts"].tolist() == [2.5] * 3
    assert P.from_strings(lines, ts=[1, 2, 3])["ts"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(InputError, match="expected 3 timestamps"):
        P.from_strings(lines, ts=[1, 2])
    with pytest.raises(InputError, match="finite"):
        P.from_strings(lines, ts=math.nan)


BAD_LINES = [
    ("tcpx 1.2.3.4:1 -> 1.1.1.1:2", 1, "unknown protocol 'tcpx'"),
    ("tcp 1.2.3.256:1 -> 1.1.1.1:2", 11, "octet '256' out of range"),
    ("tcp 1.2.3.4 -> 1.1.1.1:2", 12, "missing port"),
    ("tcp 1.2.3.4:1 > 1.1.1.1:2", 15, "expected '->'"),
    ("tcp 1.2.3.4:1 -> 1.1.1.1:65536", 26, "port '65536' out of range"),
    ("tcp [::1]:80 -> 1.1.1.1:2", 5, "IPv6 packets are not supported yet"),
    ("udp 2001:db8::1 -> 1.1.1.1:2", 5, "IPv6 packets are not supported yet"),
    ("tcp 1.1.1.1:2 -> fe80::1", 18, "IPv6 packets are not supported yet"),
    ("udp 1.2.3.4:1 -> 1.1.1.1:2 flags=S", 28, "flags= applies to tcp"),
    ("tcp 1.2.3.4:1 -> 1.1.1.1:2 flags=X", 34, "bad TCP flags 'X'"),
    ("tcp 1.2.3.4:1 -> 1.1.1.1:2 from=mars", 33, "bad origin 'mars'"),
    ("tcp 1.2.3.4:1 -> 1.1.1.1:2 foo", 28, "unknown option 'foo'"),
    ("tcp 1.2.3.4:1 -> 1.1.1.1:2 from=pod from=host", 37, "option given twice"),
    ("icmp 1.2.3.4:1 -> 1.1.1.1", 13, "icmp packets carry no ports"),
    ("", 1, "empty packet line"),
    ("   ", 1, "empty packet line"),
    ("tcp 1.2.3.4:1 -> ", 18, "missing address"),
    ("tcp 1.2.3:1 -> 1.1.1.1:2", 5, "bad IPv4 address '1.2.3:1'"),
    ("tcp 1.2.3.4.5:1 -> 1.1.1.1:2", 5, "bad IPv4 address '1.2.3.4.5:1'"),
    ("tcp 1.2.3.4:1x -> 1.1.1.1:2", 13, "bad port '1x'"),
    ("tcp 1.2.3.4:1 -> 1.1.1.1:", 26, "missing port"),
    ("tcp 1.2.3.4:1 -> 1.1.1.1:2:3", 26, "bad port '2:3'"),
    ("tcp 1.2.3.é:1 -> 1.1.1.1:2", 5, "bad IPv4 address '1.2.3.é:1'"),
    ("tcp1.2.3.4:1 -> 1.1.1.1:2", 1, "unknown protocol"),
]


@pytest.mark.parametrize("line, col, text", BAD_LINES)
def test_bad_line_names_line_column_and_text(line: str, col: int, text: str) -> None:
    good = "tcp 1.1.1.1:1 -> 2.2.2.2:2"
    with pytest.raises(InputError) as info:
        P.from_strings([good, good, line, good])
    err = info.value
    assert err.line == 3
    assert err.value == line.rstrip("\r")
    assert str(err).startswith(f"packet line 3, column {col}: ")
    assert text in str(err)
    assert "\n" not in str(err)


def test_bad_inputs_to_from_strings() -> None:
    with pytest.raises(InputError, match="not a single string"):
        P.from_strings("tcp 1.1.1.1:1 -> 2.2.2.2:2")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="packet line 2 is not a string"):
        P.from_strings(["tcp 1.1.1.1:1 -> 2.2.2.2:2", 5])  # type: ignore[list-item]
    with pytest.raises(InputError, match="packet line 2 contains a newline"):
        P.from_strings(["tcp 1.1.1.1:1 -> 2.2.2.2:2", "tcp 1.1.1.1:1 -> 2.2.2.2:2\nx"])
    with pytest.raises(InputError, match="packet must be a string"):
        P.parse(None)  # type: ignore[arg-type]
    assert len(P.from_strings([])) == 0


def test_from_text_skips_comments_and_names_file() -> None:
    text = "# packets\n\ntcp 1.1.1.1:1 -> 2.2.2.2:2\n  # more\nudp 1.1.1.1:1 -> 2.2.2.2:2\n"
    pk = P.from_text(text, origin="pod")
    assert pk["proto"].tolist() == [6, 17] and (pk["origin"] == 0).all()
    with pytest.raises(InputError) as info:
        P.from_text(text + "\nbogus 1 -> 2\n", file="pk.txt")
    assert info.value.file == "pk.txt" and info.value.line == 7
    assert str(info.value).startswith("pk.txt:7: column 1: unknown protocol 'bogus'")
    assert len(P.from_text("")) == 0


# --------------------------------------------------------------------------------------
# compiled parser vs reference parser, and round trips

_ws = st.text(alphabet=" \t", max_size=3)
_ws1 = st.text(alphabet=" \t", min_size=1, max_size=3)


@st.composite
def packet_lines(draw: st.DrawFn) -> str:
    proto = draw(st.sampled_from(["tcp", "udp", "sctp", "icmp"]))
    proto = "".join(c.upper() if draw(st.booleans()) else c for c in proto)

    def addr() -> str:
        octs = [draw(st.integers(0, 255)) for _ in range(4)]
        zeros = [draw(st.integers(0, 2)) for _ in range(4)]
        text = ".".join("0" * z + str(o) for z, o in zip(zeros, octs))
        if proto.lower() != "icmp":
            text += ":" + "0" * draw(st.integers(0, 1)) + str(draw(st.integers(0, 65535)))
        return text

    line = draw(_ws) + proto + draw(_ws1) + addr() + draw(_ws) + "->" + draw(_ws) + addr()
    opts = []
    if proto.lower() == "tcp" and draw(st.booleans()):
        flags = (
            draw(st.text(alphabet="FSRPAfsrpa", min_size=1, max_size=5))
            if draw(st.integers(0, 5))
            else draw(st.sampled_from(["none", "NONE"]))
        )
        opts.append("flags=" + flags)
    if draw(st.booleans()):
        opts.append("from=" + draw(st.sampled_from(["pod", "external", "host", "POD", "Host"])))
    opts = draw(st.permutations(opts))
    for o in opts:
        line += draw(_ws1) + o
    return line + draw(_ws) + draw(st.sampled_from(["", "\r"]))


@given(st.lists(packet_lines(), min_size=1, max_size=20), st.sampled_from([None, "pod", "host"]))
def test_compiled_parser_matches_reference(lines: list[str], origin: str | None) -> None:
    default = 255 if origin is None else P.ORIGIN_NAMES.index(origin)
    got = as_tuples(P.from_strings(lines, origin=origin))
    assert got == [ref_parse(line, default) for line in lines]


@given(st.lists(packet_lines(), min_size=1, max_size=20))
def test_round_trip_text(lines: list[str]) -> None:
    pk = P.from_strings(lines)
    again = P.from_strings(P.to_strings(pk))
    assert again.tobytes() == pk.tobytes()
    assert P.to_strings(again) == P.to_strings(pk)


def test_round_trip_synth_and_format() -> None:
    pk = P.synth(_targets(), 2000, seed=3)
    lines = P.to_strings(pk)
    back = P.from_strings(lines, ts=pk["ts"])
    assert back.tobytes() == pk.tobytes()
    assert P.to_strings(P.parse("icmp 1.2.3.4 -> 5.6.7.8 from=host")) == [
        "icmp 1.2.3.4 -> 5.6.7.8 from=host"
    ]
    assert P.to_strings(P.parse("tcp 1.2.3.4:5 -> 5.6.7.8:9 flags=as")) == [
        "tcp 1.2.3.4:5 -> 5.6.7.8:9 flags=SA"
    ]
    assert P.to_strings(P.empty_packets(0)) == []
    with pytest.raises(InputError, match="PACKET_DTYPE"):
        P.to_strings(np.zeros(3, P.VERDICT_DTYPE))


# --------------------------------------------------------------------------------------
# IPv4 conversion


@pytest.mark.parametrize(
    "text, value",
    [
        ("0.0.0.0", 0),
        ("255.255.255.255", 0xFFFFFFFF),
        ("10.0.0.1", 0x0A000001),
        ("192.168.000.001", 0xC0A80001),
        ("1.2.3.004", 0x01020304),
    ],
)
def test_ip_to_u32_scalar(text: str, value: int) -> None:
    assert P.ip_to_u32(text) == value
    assert P.u32_to_ip(value) == ".".join(str(int(o)) for o in text.split("."))


@pytest.mark.parametrize(
    "text, message",
    [
        ("256.0.0.1", "octet out of range"),
        ("1.2.3.999", "octet out of range"),
        ("1.2.3", "not an IPv4"),
        ("1.2.3.4.5", "not an IPv4"),
        ("", "not an IPv4"),
        (" 1.2.3.4", "not an IPv4"),
        ("1.2.3.4 ", "not an IPv4"),
        ("a.b.c.d", "not an IPv4"),
        ("1..2.3", "not an IPv4"),
        ("1.2.3.-4", "not an IPv4"),
        ("::1", "IPv6"),
        ("1.2.3.4\n5.6.7.8", "not an IPv4"),
        ("99999999999999999999.1.1.1", "octet"),
    ],
)
def test_ip_to_u32_rejects(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        P.ip_to_u32(text)
    assert info.value.value == text


def test_ip_vectorised() -> None:
    texts = ["0.0.0.0", "255.255.255.255", "10.96.0.10", "172.30.0.41"]
    arr = P.ip_to_u32(texts)
    assert arr.dtype == np.uint32 and arr.tolist() == [0, 0xFFFFFFFF, 0x0A60000A, 0xAC1E0029]
    back = P.u32_to_ip(arr)
    assert back.dtype == np.dtype("U15") and back.tolist() == texts
    assert P.ip_to_u32(np.array(texts).reshape(2, 2)).shape == (2, 2)
    assert P.u32_to_ip(arr.reshape(2, 2)).shape == (2, 2)
    assert P.ip_to_u32([]).shape == (0,)
    assert P.u32_to_ip(np.zeros(0, np.uint32)).shape == (0,)
    assert P.u32_to_ip(np.array([1, 2], np.int64)).tolist() == ["0.0.0.1", "0.0.0.2"]
    with pytest.raises(InputError, match=r"ip\[2\].*'1.2.3.256'"):
        P.ip_to_u32(["1.1.1.1", "2.2.2.2", "1.2.3.256", "3.3.3.3"])
    with pytest.raises(InputError, match=r"ip\[1\].*IPv6"):
        P.ip_to_u32(["1.1.1.1", "::1"])
    with pytest.raises(InputError, match=r"ip\[1\]"):
        P.ip_to_u32(["1.1.1.1", 7])
    with pytest.raises(InputError, match=r"ip\[1\]"):
        P.ip_to_u32(["1.1.1.1", "2.2.2.2\n3.3.3.3", "4.4.4.4"])
    with pytest.raises(InputError, match="out of range"):
        P.u32_to_ip(-1)
    with pytest.raises(InputError, match="out of range"):
        P.u32_to_ip(np.array([1, 1 << 32], np.int64))
    with pytest.raises(InputError, match="integer"):
        P.u32_to_ip(np.array([1.5]))


@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=50))
def test_ip_round_trip(values: list[int]) -> None:
    arr = np.array(values, np.uint32)
    strs = P.u32_to_ip(arr)
    assert strs.tolist() == [P.u32_to_ip(v) for v in values]
    assert P.ip_to_u32(strs).tolist() == values


# --------------------------------------------------------------------------------------
# allocation helpers, origins


def test_empty_arrays() -> None:
    pk = P.empty_packets(3)
    assert (pk["family"] == 4).all() and (pk["origin"] == P.Origin.AUTO).all()
    v = P.empty_verdicts(3)
    assert v["endpoint"].tolist() == [-1, -1, -1] and not v["ct_hit"].any()
    assert (v["action"] == P.Action.ACCEPT).all()
    assert P.empty_targets(2).dtype == P.TARGET_DTYPE
    with pytest.raises(InputError, match="n"):
        P.empty_packets(-1)


def test_resolve_origins() -> None:
    pk = P.from_strings(
        [
            "tcp 10.244.1.5:1 -> 1.1.1.1:1",
            "tcp 192.168.0.2:1 -> 1.1.1.1:1",
            "tcp 8.8.8.8:1 -> 1.1.1.1:1",
            "tcp 127.0.0.1:1 -> 1.1.1.1:1",
            "tcp 10.244.1.6:1 -> 1.1.1.1:1 from=external",
        ]
    )
    P.resolve_origins(pk, ["10.244.0.0/16"], ["192.168.0.2"])
    assert pk["origin"].tolist() == [0, 2, 1, 2, 1]
    with pytest.raises(InputError, match="IPv6"):
        P.resolve_origins(P.from_strings(["tcp 1.1.1.1:1 -> 2.2.2.2:2"]), ["fd00::/64"])


# --------------------------------------------------------------------------------------
# synth


def _targets(n: int = 4, origins: list[int] | None = None, proto: int = 6) -> np.ndarray:
    t = P.empty_targets(n)
    t["ip"] = 0x0A600000 + np.arange(n)
    t["port"] = 80
    t["proto"] = proto
    t["origins"] = origins if origins is not None else 7
    return t


def test_synth_deterministic() -> None:
    t = _targets(10)
    a = P.synth(t, 5000, seed=42)
    b = P.synth(t, 5000, seed=42)
    c = P.synth(t, 5000, seed=43)
    assert a.dtype == P.PACKET_DTYPE and len(a) == 5000
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_synth_empty_and_first_packet() -> None:
    t = _targets()
    assert len(P.synth(t, 0, seed=1)) == 0
    one = P.synth(t, 1, seed=1, new_flow_share=0.0, start=5.0)
    assert one["tcp_flags"][0] == P.TcpFlag.SYN and one["ts"][0] == 5.0


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_synth_new_flow_share(share: float) -> None:
    n = 20000
    pk = P.synth(_targets(50), n, seed=7, new_flow_share=share)
    syn = pk["tcp_flags"] == P.TcpFlag.SYN
    ack = pk["tcp_flags"] == P.TcpFlag.ACK
    assert (syn | ack).all() and syn[0]
    expected = 1 + share * (n - 1)
    assert abs(syn.sum() - expected) <= max(5, 0.02 * n)  # ~6 sigma at n = 20000
    # every repeat reuses the 5-tuple (and origin) of an earlier new flow
    fields = ["src_ip", "dst_ip", "src_port", "dst_port", "proto", "origin"]
    first = {tuple(r): i for i, r in enumerate(pk[syn][fields].tolist())}
    assert len(first) == syn.sum()  # new flows have distinct 5-tuples
    syn_pos = np.flatnonzero(syn)
    for i in np.flatnonzero(ack)[:500]:
        key = tuple(pk[i][fields].tolist())
        assert key in first and syn_pos[first[key]] < i


def test_synth_udp_carries_no_flags_and_icmp_no_ports() -> None:
    udp = P.synth(_targets(proto=17), 500, seed=1)
    assert not udp["tcp_flags"].any()
    icmp = P.synth(_targets(proto=1), 500, seed=1)
    assert not icmp["src_port"].any() and not icmp["tcp_flags"].any()


def test_synth_zipf_skew() -> None:
    n_t, n = 100, 20000
    t = _targets(n_t)
    kw = dict(seed=11, new_flow_share=1.0)
    uni = (
        np.bincount(P.synth(t, n, popularity="uniform", **kw)["dst_ip"] - t["ip"][0], minlength=n_t)
        / n
    )
    zipf = (
        np.bincount(
            P.synth(t, n, popularity="zipf", zipf_s=1.0, **kw)["dst_ip"] - t["ip"][0], minlength=n_t
        )
        / n
    )
    harmonic = sum(1 / k for k in range(1, n_t + 1))
    assert abs(zipf[0] - 1 / harmonic) < 0.02  # ~0.193
    assert abs(zipf[1] - 1 / (2 * harmonic)) < 0.015
    assert uni[0] < 0.02 and uni.max() < 0.03
    assert zipf[:10].sum() > 0.45 and uni[:10].sum() < 0.15
    s2 = (
        np.bincount(
            P.synth(t, n, popularity="zipf", zipf_s=2.0, **kw)["dst_ip"] - t["ip"][0], minlength=n_t
        )
        / n
    )
    assert s2[0] > 0.55


def test_synth_origin_eligibility() -> None:
    # target 0: pods only; 1: external only; 2: host + pods; 3: nobody
    t = _targets(4, origins=[1, 2, 5, 0])
    pk = P.synth(t, 20000, seed=5, new_flow_share=1.0)
    idx = pk["dst_ip"] - t["ip"][0]
    assert not (idx == 3).any()
    allowed = t["origins"][idx] & (1 << pk["origin"].astype(np.uint8))
    assert allowed.all()
    share = np.bincount(pk["origin"], minlength=3) / len(pk)
    assert abs(share[0] - 0.8) < 0.02 and abs(share[1] - 0.1) < 0.015
    assert abs(share[2] - 0.1) < 0.015
    # external has no eligible target: its share goes to the others
    pk = P.synth(_targets(3, origins=[1, 4, 5]), 20000, seed=5, new_flow_share=1.0)
    share = np.bincount(pk["origin"], minlength=3) / len(pk)
    assert share[1] == 0 and abs(share[0] - 0.8 / 0.9) < 0.02


def test_synth_sources() -> None:
    t = _targets(3)
    pk = P.synth(
        t,
        5000,
        seed=2,
        new_flow_share=1.0,
        sources={"pod": ["10.1.0.0/30", "10.2.0.5"], "host": "192.168.7.7"},
    )
    pod = pk["src_ip"][pk["origin"] == 0]
    assert set(P.u32_to_ip(np.unique(pod)).tolist()) == {"10.1.0.1", "10.1.0.2", "10.2.0.5"}
    host = pk["src_ip"][pk["origin"] == 2]
    assert set(P.u32_to_ip(np.unique(host)).tolist()) == {"192.168.7.7"}
    ext = pk["src_ip"][pk["origin"] == 1]
    net = P.ip_to_u32("203.0.113.0")
    assert ((ext > net) & (ext < net + 255)).all()  # default, no network/broadcast
    lo, hi = P.EPHEMERAL_PORTS
    assert (lo, hi) == (32768, 60999)
    assert ((pk["src_port"] >= lo) & (pk["src_port"] <= hi)).all()
    assert pk["src_port"].min() < lo + 500 and pk["src_port"].max() > hi - 500


def test_synth_timestamps() -> None:
    pk = P.synth(_targets(), 20000, seed=9, rate=1000.0, start=10.0)
    ts = pk["ts"]
    assert ts[0] == 10.0 and (np.diff(ts) > 0).all()
    assert abs(np.diff(ts).mean() - 1e-3) < 5e-5


class _Cluster:
    def packet_targets(self) -> np.ndarray:
        return _targets(2, origins=[1, 1])

    def packet_sources(self) -> dict[str, list[str]]:
        return {"pod": ["10.9.9.9"]}


class _NoPodSources(_Cluster):
    def packet_sources(self) -> dict[str, list[str]]:
        return {"pod": []}


def test_synth_from_object() -> None:
    pk = P.synth(_Cluster(), 100, seed=1)
    assert (pk["origin"] == 0).all()
    assert set(P.u32_to_ip(np.unique(pk["src_ip"])).tolist()) == {"10.9.9.9"}
    pk = P.synth(_Cluster(), 100, seed=1, sources={"pod": ["10.8.8.8"]})
    assert set(P.u32_to_ip(np.unique(pk["src_ip"])).tolist()) == {"10.8.8.8"}


def test_synth_zipf_large_exponent_still_reaches_each_origin() -> None:
    # external may only use the 50th target; with s=200 its weight underflows globally
    t = _targets(50, origins=[1] * 49 + [2])
    pk = P.synth(t, 2000, seed=1, popularity="zipf", zipf_s=200.0, new_flow_share=1.0)
    ext = pk[pk["origin"] == 1]
    assert len(ext) > 100 and (ext["dst_ip"] == t["ip"][49]).all()
    assert (pk[pk["origin"] == 0]["dst_ip"] == t["ip"][0]).all()


def test_synth_accepts_compatible_structured_array() -> None:
    t = np.zeros(
        2, [("ip", "u8"), ("port", "i4"), ("proto", "u1"), ("origins", "u1"), ("name", "U5")]
    )
    t["ip"] = [1, 2]
    t["port"] = 80
    t["proto"] = 6
    t["origins"] = 1
    pk = P.synth(t, 10, seed=1)
    assert set(pk["dst_ip"].tolist()) <= {1, 2}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(n=-1), "n"),
        (dict(n=1.5), "n"),
        (dict(seed=-1), "seed"),
        (dict(seed="x"), "seed"),
        (dict(seed=True), "seed"),
        (dict(popularity="pareto"), "popularity"),
        (dict(zipf_s=-1.0), "zipf_s"),
        (dict(zipf_s=math.inf), "zipf_s"),
        (dict(new_flow_share=1.5), "new_flow_share"),
        (dict(new_flow_share=-0.1), "new_flow_share"),
        (dict(new_flow_share="half"), "new_flow_share"),
        (dict(rate=0), "rate"),
        (dict(rate=math.nan), "rate"),
        (dict(start=math.inf), "start"),
        (dict(origin_mix={"mars": 1.0}), "origin_mix"),
        (dict(origin_mix={"pod": -1.0}), "origin_mix[pod]"),
        (dict(origin_mix={"pod": 0.0}), "origin_mix"),
        (dict(origin_mix=[0.5, 0.5]), "origin_mix"),
        (dict(sources={"pod": ["10.0.0.0/33"]}), "sources[pod][0]"),
        (dict(sources={"pod": ["fd00::/64"]}), "sources[pod][0]"),
        (dict(sources={"pod": [5]}), "sources[pod][0]"),
        (dict(sources={"pod": []}), "sources[pod]"),
        (dict(targets=_NoPodSources()), "packet_sources()[pod]"),
        (dict(targets=_NoPodSources(), sources={"pod": "10.0.0.0/30/1"}), "sources[pod][0]"),
        (dict(sources={"alien": ["1.1.1.1"]}), "sources"),
        (dict(sources=["1.1.1.1"]), "sources"),
        (dict(targets=np.zeros(3, P.PACKET_DTYPE)), "targets"),
        (dict(targets=[1, 2]), "targets"),
        (dict(targets=P.empty_targets(0)), "targets"),
        (dict(targets=_targets(2, origins=[0, 0])), "targets.origins"),
        (dict(targets=_targets(2, origins=[2, 2]), origin_mix={"pod": 1.0}), "origin_mix"),
        (dict(targets=_targets(2, origins=[8, 1])), "targets[0].origins"),
        (dict(targets=_targets(2, proto=47)), "targets[0].proto"),
    ],
)
def test_synth_rejects_bad_arguments(kwargs: dict, field: str) -> None:
    args = dict(targets=_targets(), n=10, seed=1)
    args.update(kwargs)
    targets, n = args.pop("targets"), args.pop("n")
    with pytest.raises(InputError) as info:
        P.synth(targets, n, **args)
    assert info.value.field == field
    assert "\n" not in str(info.value)
