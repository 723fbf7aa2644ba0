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
