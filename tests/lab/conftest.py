"""What the kernel-lab tests share: a test that needs the lab is skipped where it cannot
run, and fails instead under KPROXY_EMU_REQUIRE_LAB=1 (CI, where a skip would hide a
broken lab); a lab test leaves no namespace of this process behind."""

import os

import pytest


def skip_or_fail(reason: str | None) -> None:
    """Nothing when ``reason`` is None; else skip the test, or fail it in CI."""
    if reason is None:
        return
    if os.environ.get("KPROXY_EMU_REQUIRE_LAB"):
        pytest.fail(f"kernel lab required (KPROXY_EMU_REQUIRE_LAB=1): {reason}")
    pytest.skip(reason)


@pytest.fixture
def lab_available():
    from kproxy_emu.lab.env import unavailable_reason

    skip_or_fail(unavailable_reason())


@pytest.fixture
def no_leftovers():
    from kproxy_emu.lab.topology import lab_namespaces

    yield
    assert lab_namespaces(os.getpid()) == []
