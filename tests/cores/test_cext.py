"""The compiled core: struct layout vs numpy dtypes, buffer acceptance, raw routines."""

from __future__ import annotations

import numpy as np
import pytest

from kproxy_emu import packets as P
from kproxy_emu._cext import packetio, traffic

LAYOUT = packetio.struct_layout()


@pytest.mark.parametrize(
    "struct, dtype",
    [
        ("packet_t", P.PACKET_DTYPE),
        ("verdict_t", P.VERDICT_DTYPE),
        ("target_t", P.TARGET_DTYPE),
    ],
)
def test_dtype_matches_c_struct(struct: str, dtype: np.dtype) -> None:
    c = LAYOUT[struct]
    assert dtype.itemsize == c["itemsize"]
    # same fields in the same order, same offsets and sizes
    assert list(dtype.names) == list(c["fields"])
    for name, offset in c["fields"].items():
        assert dtype.fields[name][1] == offset, name
        assert dtype[name].itemsize == c["sizes"][name], name


def test_documented_sizes() -> None:
    assert LAYOUT["packet_t"]["itemsize"] == 24
    assert LAYOUT["verdict_t"]["itemsize"] == 28
    assert LAYOUT["target_t"]["itemsize"] == 8
    assert P.VERDICT_DTYPE["ct_hit"] == np.dtype(bool)


def test_design_field_names() -> None:
    assert set(P.VERDICT_DTYPE.names) == {
        "action",
        "dnat_ip",
        "dnat_port",
        "snat_ip",
        "snat_port",
        "endpoint",
        "ct_hit",
        "lookups",
        "rules",
        "probes",
    }
    assert P.PACKET_DTYPE.names == (
        "ts",
        "src_ip",
        "dst_ip",
        "src_port",
        "dst_port",
        "proto",
        "tcp_flags",
        "origin",
        "family",
    )


def test_numpy_arrays_pass_cython_buffer_check_and_write_through() -> None:
    pk = P.from_strings(
        [
            "tcp 10.0.0.2:1234 -> 172.30.0.41:80 from=host",
            "udp 10.0.0.3:999 -> 10.96.0.10:53 from=external",
        ]
    )
    v = P.empty_verdicts(2)
    assert packetio._selftest_write(pk, v) == 2  # takes packet_t[:] and verdict_t[:]
    assert v["action"].tolist() == [P.Action.DNAT, P.Action.DNAT]
    assert v["dnat_ip"].tolist() == pk["dst_ip"].tolist()
    assert v["dnat_port"].tolist() == [80, 53]
    assert v["snat_ip"].tolist() == pk["src_ip"].tolist()
    assert v["snat_port"].tolist() == [1234, 999]
    assert v["endpoint"].tolist() == [0, 1]
    assert v["ct_hit"].dtype == np.bool_
    assert v["ct_hit"].tolist() == [False, True]
    assert v["rules"].tolist() == [6 + 2, 17]
    assert v["probes"].tolist() == [2 * 1000 + 4, 1 * 1000 + 4]


def test_strided_and_readonly_buffers() -> None:
    pk = P.from_strings(
        ["tcp 1.1.1.1:1 -> 2.2.2.2:2", "udp 3.3.3.3:3 -> 4.4.4.4:4", "sctp 5.5.5.5:5 -> 6.6.6.6:6"]
    )
    pk.flags.writeable = False
    v = P.empty_verdicts(4)
    # read-only packets are fine for const packet_t[:]; strided verdict views too
    assert packetio._selftest_write(pk[::2], v[::2]) == 2
    assert v["dnat_port"].tolist() == [2, 0, 6, 0]
    assert v["endpoint"].tolist() == [0, -1, 1, -1]
    assert P.to_strings(pk[::-1])[0] == "sctp 5.5.5.5:5 -> 6.6.6.6:6"


def test_wrong_dtype_is_rejected_by_buffer_check() -> None:
    swapped = np.dtype(
        [
            ("dnat_ip", "u4"),
            ("snat_ip", "u4"),
            ("dnat_port", "u2"),
            ("snat_port", "u2"),
            ("endpoint", "i4"),
            ("rules", "u4"),
            ("probes", "u4"),
            ("action", "u1"),
            ("ct_hit", "f4"),
        ],
        align=True,
    )
    with pytest.raises(ValueError):
        packetio.reset_verdicts(np.zeros(2, swapped))
    with pytest.raises(ValueError):
        packetio.reset_verdicts(np.zeros(2, P.PACKET_DTYPE))


def test_reset_verdicts() -> None:
    v = np.ones(3, P.VERDICT_DTYPE)
    packetio.reset_verdicts(v)
    assert v["endpoint"].tolist() == [-1, -1, -1]
    for f in ("dnat_ip", "snat_ip", "dnat_port", "snat_port", "rules", "probes", "action"):
        assert not v[f].any(), f
    assert not v["ct_hit"].any()


def test_parse_packets_raw_return() -> None:
    out = P.empty_packets(3)
    res = packetio.parse_packets(b"tcp 1.1.1.1:1 -> 2.2.2.2:2\nudp 1.1.1.1:1 -> x", out)
    count, err, line, col, lo, hi = res
    assert (count, err, line, col) == (1, packetio.E_ADDR, 1, 17)
    assert (lo, hi) == (27, 27 + len("udp 1.1.1.1:1 -> x"))
    # capacity: more lines than output rows
    res = packetio.parse_packets(
        b"tcp 1.1.1.1:1 -> 2.2.2.2:2\n" * 3 + b"tcp 1.1.1.1:1 -> 2.2.2.2:2", out
    )
    assert res[:3] == (3, packetio.E_CAPACITY, 3)
    # skip_blank: comments and blank lines, line index counts every line
    text = b"# header\n\n  tcp 1.1.1.1:1 -> 2.2.2.2:2\n   # c\nbad\n"
    res = packetio.parse_packets(text, out, 255, True)
    assert res[:4] == (1, packetio.E_PROTO, 4, 0)
    assert packetio.parse_packets(b"", out, 255, True)[:2] == (0, 0)
    assert packetio.parse_packets(b"", out)[:2] == (0, packetio.E_EMPTY)


def test_parse_ipv4_lines_raw() -> None:
    out = np.zeros(3, np.uint32)
    assert packetio.parse_ipv4_lines(b"1.2.3.4\n0.0.0.0\n255.255.255.255", out) == (3, 0, 3)
    assert out.tolist() == [0x01020304, 0, 0xFFFFFFFF]
    assert packetio.parse_ipv4_lines(b"1.2.3.4\n0.0.0.0", out)[1] == packetio.E_CAPACITY
    assert packetio.parse_ipv4_lines(b"1.2.3.4\n0.0.0.256\n1.1.1.1", out)[1:] == (
        packetio.E_OCTET,
        1,
    )
    assert packetio.parse_ipv4_lines(b"1.2.3.4\n1.1.1.1\nfe80::1", out)[1:] == (packetio.E_IPV6, 2)


def test_format_ipv4_raw() -> None:
    ips = np.array([0, 0xFFFFFFFF, 0x0A000001], np.uint32)
    out = np.full(3, "x" * 15, "U15")
    packetio.format_ipv4(ips, out.view(np.uint32).reshape(3, 15))
    assert out.tolist() == ["0.0.0.0", "255.255.255.255", "10.0.0.1"]


def _generate_args(n: int, share: float = 0.5) -> list:
    rng = np.random.default_rng(0)
    t = np.zeros(2, P.TARGET_DTYPE)
    t["ip"] = [1, 2]
    t["port"] = [80, 53]
    t["proto"] = [6, 17]
    t["origins"] = [1, 1]
    u = rng.random((traffic.UNIFORM_ROWS, n))
    cap = 1 << max(1, (2 * traffic.new_flow_count(u, n, share) - 1).bit_length())
    return [
        P.empty_packets(n),
        u,
        np.ones(n),
        0.0,
        share,
        t,
        np.array([1.0, 1.0, 1.0]),
        np.array([1.0, 2.0]),
        np.array([0, 1], np.int64),
        np.array([0, 2, 2, 2], np.int64),
        np.array([100], np.uint32),
        np.array([10.0]),
        np.array([0, 1, 1, 1], np.int64),
        np.empty(n, np.int64),
        np.zeros((cap, 2), np.uint64),
    ]


def test_generate_raw() -> None:
    args = _generate_args(1000)
    flows, reused = traffic.generate(*args)
    assert flows == traffic.new_flow_count(args[1], 1000, 0.5)
    out = args[0]
    assert 400 < flows < 600 and reused == 0
    key = out[["src_ip", "dst_ip", "src_port", "dst_port", "proto"]]
    assert out["ts"].tolist() == list(range(1000))
    assert ((out["src_ip"] >= 100) & (out["src_ip"] < 110)).all()
    assert (out["origin"] == 0).all()
    assert len(np.unique(key)) == flows


@pytest.mark.parametrize(
    "index, bad",
    [
        (14, np.zeros((512, 2), np.uint64)),  # seen too small for ~500 flows
        (14, np.zeros((3000, 2), np.uint64)),  # not a power of two
        (14, np.zeros((2048, 3), np.uint64)),  # not (2**k, 2)
        (6, np.array([1.0, 1.0])),  # origin table
        (9, np.array([0, 2, 2], np.int64)),  # target offsets
    ],
)
def test_generate_rejects_bad_tables(index: int, bad: np.ndarray) -> None:
    args = _generate_args(1000)
    args[index] = bad
    with pytest.raises(ValueError):
        traffic.generate(*args)


def test_generate_rejects_origin_without_targets() -> None:
    args = _generate_args(10)
    args[6] = np.array([0.0, 1.0, 1.0])  # all weight on external, which has no targets
    with pytest.raises(ValueError, match="no targets or sources"):
        traffic.generate(*args)


def test_generate_reuses_tuples_only_when_ports_run_out() -> None:
    n = 40000
    args = _generate_args(n, share=1.0)
    t = args[5]
    t["proto"] = [6, 6]
    args[10] = np.array([7], np.uint32)  # one source address
    args[11] = np.array([1.0])
    args[7] = np.array([1.0])
    args[8] = np.array([0], np.int64)
    args[9] = np.array([0, 1, 1, 1], np.int64)  # one target
    flows, reused = traffic.generate(*args)
    out = args[0]
    assert flows == n
    ports = out["src_port"]
    assert ports.min() >= P.EPHEMERAL_PORTS[0] and ports.max() <= P.EPHEMERAL_PORTS[1]
    distinct = np.unique(ports).size
    assert distinct + reused == n
    assert reused > 0 and distinct > 27000  # nearly every ephemeral port used first
