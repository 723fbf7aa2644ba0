"""The package ships its types (PEP 561): a user's type checker sees them, not Any."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import kproxy_emu

ROOT = Path(__file__).resolve().parents[2]


def test_py_typed_ships_with_the_package():
    assert (Path(kproxy_emu.__file__).parent / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert "py.typed" in package_data["kproxy_emu"]
    assert "py.typed" in package_data["kproxy_emu._cext"]


USER_SCRIPT = """\
import kproxy_emu
from kproxy_emu import packets

reveal_type(packets.ip_to_u32("10.0.0.1"))
reveal_type(kproxy_emu.synth.cluster(10))
reveal_type(packets.from_strings(["tcp 10.0.0.1:1 -> 10.0.0.2:80"]))
"""


@pytest.mark.slow
def test_a_users_mypy_sees_the_packages_types(tmp_path):
    """mypy on a user's script, the package found as an installed one (on the Python path,
    where PEP 561 requires py.typed): the revealed types are the package's, not Any."""
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-incremental", "user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    revealed = [
        line.split("Revealed type is ")[1]
        for line in proc.stdout.splitlines()
        if "Revealed type is" in line
    ]
    assert len(revealed) == 3
    assert revealed[0] == '"int"'
    assert revealed[1] == '"kproxy_emu.model.cluster.Cluster"'
    # a structured numpy array (the shape's spelling varies with numpy's version)
    assert revealed[2].startswith('"numpy.ndarray[') and "numpy.dtype[numpy.void]" in revealed[2]
