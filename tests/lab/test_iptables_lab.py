"""render_live against the real tool (root, iptables-nft v1.8.9, network namespaces): what
we say a live node's iptables-save prints is what it prints once the rules are loaded.
The recorded outputs these compare with are checked without root in
tests/modes/test_iptables_live.py."""

import json
import os
import shutil
import subprocess

import pytest

from kproxy_emu.netfilter.iptables_live import comparable_lines, render_live
from kproxy_emu.netfilter.iptables_parse import parse
from tests.helpers.fixtures import FIXTURES, require_fixtures
from tests.modes.test_iptables_live import JUMPS, LIVE, corpus, overall_as_loaded


def _lab_available() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("unshare", "iptables-nft-restore", "iptables-nft-save", "ipset", "nfacct"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    version = subprocess.run(["iptables-nft", "--version"], capture_output=True, text=True)
    if "v1.8.9" not in version.stdout:
        return f"the recorded outputs are iptables v1.8.9's; this is {version.stdout.strip()}"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode:
        return "cannot create a network namespace"
    return None


def _require_lab():
    why = _lab_available()
    if why is not None:
        if os.environ.get("KPROXY_EMU_REQUIRE_LAB"):
            pytest.fail(f"lab test cannot run: {why}")
        pytest.skip(why)


LAB_SETUP = [
    "nfacct add foo",
    "nfacct add ct_state_invalid_dropped_pkts",
    "nfacct add localhost_nps_accepted_pkts",
    *(
        f"ipset create {name} {kind}"
        for name, kind in (
            ("KUBE-CLUSTER-IP", "hash:ip,port"),
            ("foo", "hash:ip"),
            ("foo6", "hash:ip family inet6"),
            ("KUBE-LOAD-BALANCER", "hash:ip,port"),
            ("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port range 0-65535"),
            ("KUBE-IPVS-IPS", "hash:ip"),
            ("KUBE-LOAD-BALANCER-FW", "hash:ip,port"),
            ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net"),
            ("KUBE-NODE-PORT-TCP", "bitmap:port range 0-65535"),
            ("KUBE-LOOP-BACK", "hash:ip,port,ip"),
            ("cali40s:abcdefg", "hash:net"),
            ("cali40masq-ipam-pools", "hash:net"),
            ("cali40all-ipam-pools", "hash:net"),
        )
    ),
]


def _real_save(texts: list[str], family: str) -> str:
    """iptables-restore --noflush each text in turn in a fresh network namespace, then
    iptables-save."""
    six = "6" if family == "IPv6" else ""
    script = ["set -e", *(c + " >/dev/null" for c in LAB_SETUP)]
    for k in range(len(texts)):
        script.append(
            f'ip{six}tables-nft-restore --noflush <<"KPROXY_EOF_{k}"\n{texts[k]}KPROXY_EOF_{k}'
        )
    script.append(f"ip{six}tables-nft-save")
    done = subprocess.run(
        ["unshare", "--net", "bash", "-c", "\n".join(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.lab
@pytest.mark.parametrize("name", ["modules", "targets", "foreign", "edge", "ipv6"])
def test_lab_corpus_against_the_real_tool(name):
    _require_lab()
    text, saved, family = corpus(name)
    real = _real_save([text], family)
    assert comparable_lines(real) == comparable_lines(saved)  # the recording is current
    got = render_live(parse(text, family=family))
    assert comparable_lines(got, counters=False) == comparable_lines(real, counters=False)


@pytest.mark.lab
def test_lab_overall_fixture_against_the_real_tool():
    _require_lab()
    require_fixtures()
    text = json.loads((FIXTURES / "iptables-overall.json").read_text())["expected"]["text"]
    real = _real_save([text, JUMPS], "IPv4")
    assert comparable_lines(real) == comparable_lines(LIVE.read_text())
    assert comparable_lines(render_live(overall_as_loaded())) == comparable_lines(real)
