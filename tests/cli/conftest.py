import pytest

from kproxy_emu.bench import sweep


@pytest.fixture(scope="module")
def cluster():
    """A small synthetic cluster (60 services) the mode commands run on."""
    return sweep.make_cluster(60, 4, 5)
