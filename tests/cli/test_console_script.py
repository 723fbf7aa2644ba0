"""The command line as its own process (``python -m kproxy_emu.cli``, what the
``kproxy-emu`` console script runs): exit status and exactly what reaches the terminal.
The other CLI tests call kproxy_emu.cli.main in process."""

import subprocess
import sys


def test_cli_bad_manifest_exits_2_with_one_line_and_no_traceback(write):
    file = write(
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns1}\n"
        "spec:\n  clusterIP: 172.30.0.10\n  ports:\n  - port: 70000\n",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kproxy_emu.cli", "check", file], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"kproxy-emu: error: {file}: Service ns1/web: spec.ports[0].port: "
        "must be between 1 and 65535: 70000\n"
    )


def test_cli_usage_error_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "kproxy_emu.cli", "synth", "--services", "x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
