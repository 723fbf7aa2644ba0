"""SyncResult's text given as a function: rendered on first read, counted without it."""

from __future__ import annotations

from kproxy_emu import synth
from kproxy_emu.dataplane import Dataplane
from kproxy_emu.dataplane.sync import SyncResult


def test_text_given_as_a_function_is_rendered_once_on_first_read() -> None:
    calls: list[int] = []

    def render() -> str:
        calls.append(1)
        return "a\nb\n"

    result = SyncResult(True, None, text=render)
    assert calls == [] and "not rendered" in repr(result)
    assert (result.lines, result.bytes, result.text) == (2, 4, "a\nb\n")
    assert result.cost()["lines"] == 2 and calls == [1]


def test_size_counts_without_rendering_and_agrees_with_the_text() -> None:
    calls: list[int] = []
    result = SyncResult(True, None, text=lambda: calls.append(1) or "xy\nz\n", size=lambda: (2, 5))
    assert (result.lines, result.bytes) == (2, 5) and calls == []
    assert result.text == "xy\nz\n" and calls == [1]


def test_ipvs_full_sync_is_sized_without_rendering_and_the_size_is_the_texts() -> None:
    cluster = synth.cluster(60, endpoints=3, seed=4)
    dp = Dataplane(cluster, "ipvs")
    full = dp.syncs[-1]
    assert "not rendered" in repr(full)  # building the node rendered no text
    lines, nbytes = full.lines, full.bytes
    assert "not rendered" in repr(full)  # nor did counting it
    text = full.text
    assert (lines, nbytes) == (text.count("\n"), len(text.encode()))
    assert text.endswith(dp.render(format="restore"))  # ipvsadm -Sn closes the text


def test_ipvs_reset_lends_the_bulk_maps_and_a_sync_copies_them_first() -> None:
    """A reset hands the cached index maps to the new table without copying them; a later
    sync that changes servers copies them first, so the next reset starts from the
    state's maps, unchanged."""
    from kproxy_emu.bench.sweep import one_endpoint_changed

    cluster = synth.cluster(40, endpoints=3, seed=2)
    dp = Dataplane(cluster, "ipvs")
    dp.reset_state()
    bulk = dp.backend._bulk
    maps = bulk[3:6]
    before = [dict(m) for m in maps]  # the per-service keys are tuples: immutable
    sync = dp.backend.ipvs
    assert (sync.services, sync.dests, sync.service_dests) == maps
    assert sync.dests is maps[1]  # lent, not copied
    dp.update(one_endpoint_changed(cluster))
    assert dp.backend.ipvs.dests is not maps[1]
    assert [dict(m) for m in maps] == before  # the cache is intact
    assert all(isinstance(keys, tuple) for keys in maps[2].values())
