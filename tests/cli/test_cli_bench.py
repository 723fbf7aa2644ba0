"""kproxy-emu bench."""


def test_cli_bad_input_exits_2(cli):
    proc = cli("bench", "--modes", "bogus")
    assert proc.returncode == 2 and "--modes" in proc.stderr and "Traceback" not in proc.stderr
