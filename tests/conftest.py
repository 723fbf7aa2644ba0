"""Shared pytest fixtures and the hypothesis budgets.

Layout: tests/unit (model, config, packets, synth, parsers), tests/cores (the Cython
engines), tests/modes (per-mode compilers, fixtures, the Dataplane), tests/cli (the command
line), tests/lab (the real kernel: root), tests/bench (the bench sweep); shared helpers in
tests/helpers, vendored kube-proxy fixtures in tests/data.
"""

import os
import subprocess
import warnings

import pytest
from hypothesis import settings

# Hypothesis budgets. A developer's run ("dev") tries a modest number of new examples each
# time; CI ("ci", chosen when the CI variable is set, as .ci/run does) runs more, and the
# same ones on every run. HYPOTHESIS_PROFILE=ci picks a profile explicitly. Tests whose
# examples are expensive keep their own smaller max_examples.
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture
def write(tmp_path):
    def _write(name, text):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    return _write


@pytest.fixture
def cli(capsys):
    """Run ``kproxy-emu ARGS...`` in this process (kproxy_emu.cli.main); returns what a
    subprocess run would: a CompletedProcess with returncode, stdout and stderr."""
    from kproxy_emu.cli import main

    def _run(*args):
        argv = [str(a) for a in args]
        capsys.readouterr()  # drop anything printed before the command
        # main() installs its own warning printer; warnings are printed as a fresh
        # interpreter would print them (the suite otherwise turns them into errors)
        with warnings.catch_warnings():
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
                warnings.simplefilter("ignore", quiet)
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse's usage errors and --help exit
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["kproxy-emu", *argv], code or 0, out, err)

    return _run
