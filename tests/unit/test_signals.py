"""kproxy_emu.signals: a signal becomes one exception, raised only where it is safe, and is
never lost (issue 18 item 9; the lab's tests send real signals to real runs)."""

import gc
import os
import signal
import weakref

import pytest

from kproxy_emu import signals


def _send(sig=signal.SIGTERM):
    os.kill(os.getpid(), sig)


def test_outside_a_critical_section_the_signal_raises_at_once():
    before = signal.getsignal(signal.SIGTERM)
    reached = False
    with pytest.raises(signals.Interrupted) as info, signals.handled():
        _send()
        reached = True
    assert not reached and info.value.signum == signal.SIGTERM
    assert info.value.exit_code == 143 and str(info.value) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_critical_section_finishes_before_the_signal_is_raised():
    steps = []
    with pytest.raises(signals.Interrupted, match="SIGINT during the setup"), signals.handled():
        with signals.critical("the setup"):
            _send(signal.SIGINT)
            steps.append("after the signal")
            _send(signal.SIGTERM)  # a second signal adds nothing
            steps.append("after the second")
        steps.append("after the section")
    assert steps == ["after the signal", "after the second"]
    assert signals.pending() is None


def test_check_raises_a_pending_signal_inside_a_section():
    with pytest.raises(signals.Interrupted), signals.handled(), signals.critical("a loop"):
        _send()
        for i in range(10):
            if i == 3:
                signals.check()
        pytest.fail("check() did not raise")


def test_a_signal_whose_exception_a_callback_swallows_is_not_lost(capsys):
    """Raised inside a weakref callback (code the garbage collector runs anywhere),
    Python can only report the exception: it stays pending, nothing is printed, and the
    end of handled() raises it."""

    class Obj:
        pass

    ran = []
    obj = Obj()
    with pytest.raises(signals.Interrupted), signals.handled():
        weakref.finalize(obj, lambda: (_send(), ran.append("callback went on")))
        del obj
        gc.collect()
        ran.append("the block went on")
    assert ran == ["the block went on"]  # the callback stopped, the block did not
    assert capsys.readouterr().err == ""


def test_a_failure_during_a_pending_signal_is_reported_as_the_signal():
    with (
        pytest.raises(signals.Interrupted) as info,
        signals.handled(),
        signals.critical("loading"),
    ):
        _send()
        raise OSError("the helper died of the same Ctrl-C")
    assert isinstance(info.value.__cause__, OSError)


def test_after_the_block_the_chosen_handlers_are_installed():
    def mine(signum, frame):
        pass

    saved = {s: signal.getsignal(s) for s in signals.SIGNALS}
    try:
        with signals.handled(then=mine):
            pass
        assert all(signal.getsignal(s) is mine for s in signals.SIGNALS)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
