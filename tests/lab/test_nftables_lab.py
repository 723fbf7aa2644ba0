"""The nftables renderings against the real tool (root, ``nft`` 1.0.6, network namespaces):
what we say ``nft list ruleset`` prints is what it prints once our ``nft -f`` script is
loaded, and every sync's transaction loads on top of the previous state."""

import os
import shutil
import subprocess

import pytest

from kproxy_emu import synth
from kproxy_emu.dataplane.dataplane import changed_services, resolve_node
from kproxy_emu.model import Cluster
from kproxy_emu.modes.nftables import NftProxier, compile_nftables, service_cidrs_for
from kproxy_emu.netfilter.nft_text import (
    parse_list,
    render_list,
    render_nft_file,
    render_transaction,
)
from kproxy_emu.proxy import ProxyOptions, ProxyView
from tests.helpers.fixtures import as_manifests
from tests.helpers.nftables_env import SERVICE_CIDRS, fixture, options_for, view_of


def _lab_available():
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        return "needs nft and unshare"
    version = subprocess.run(["nft", "--version"], capture_output=True, text=True)
    if "v1.0.6" not in version.stdout:
        return f"the list format checked is nftables v1.0.6's; this is {version.stdout.strip()}"
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode:
        return "cannot create a network namespace"
    return None


def _require_lab():
    why = _lab_available()
    if why is not None:
        if os.environ.get("KPROXY_EMU_REQUIRE_LAB"):
            pytest.fail(f"lab test cannot run: {why}")
        pytest.skip(why)


def _real_list(scripts: list[str]) -> str:
    """``nft -f`` each script in turn in a fresh network namespace, then list the ruleset."""
    body = ["set -e"]
    for k, text in enumerate(scripts):
        body.append(f'nft -f - <<"KPROXY_EOF_{k}"\n{text}KPROXY_EOF_{k}')
    body.append("nft list ruleset")
    done = subprocess.run(
        ["unshare", "--net", "bash", "-c", "\n".join(body)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.lab
def test_lab_compiled_tables_list_as_the_kernel_prints(tmp_path):
    _require_lab()
    fx = fixture("nftables-overall.json")
    options = options_for(fx["environment"], tmp_path)
    tables = [
        compile_nftables(
            view_of(options, fx["input"]["services"], fx["input"]["endpointSlices"]),
            service_cidrs=SERVICE_CIDRS,
        )
    ]
    cluster = synth.cluster(services=40, endpoints="uniform:0-5", nodes=3, seed=3)
    node_options = ProxyOptions.build(resolve_node(cluster), cluster_cidr="10.0.0.0/8")
    tables.append(
        compile_nftables(ProxyView(cluster, node_options), service_cidrs=service_cidrs_for(cluster))
    )
    # several source ranges (the node's among them), adjacent service CIDRs, no detector,
    # masqueradeAll, NodePorts on a node CIDR
    other = options_for(
        fx["environment"],
        tmp_path,
        masquerade_all=True,
        detector=False,
        node_port_addresses=["192.168.0.0/16"],
    )
    svc = dict(fx["input"]["services"][4])
    svc["spec"] = dict(
        svc["spec"],
        loadBalancerSourceRanges=[
            "203.0.113.0/25",
            "192.168.0.0/24",
            "10.0.0.0/8",
            "203.0.113.128/25",
        ],
    )
    tables.append(
        compile_nftables(
            view_of(other, [svc], fx["input"]["endpointSlices"]),
            service_cidrs=["172.30.0.0/16", "172.31.0.0/16"],
        )
    )
    for table in tables:
        real = _real_list([render_nft_file(table)])
        assert real == render_list(table)
        assert render_list(parse_list(real)) == real


@pytest.mark.lab
def test_lab_sync_transactions_load_in_turn(tmp_path):
    _require_lab()
    fx = fixture("nftables-sync-repeated.json")
    options = options_for(fx["environment"], tmp_path)
    proxier = NftProxier(options, SERVICE_CIDRS)
    services, slices, scripts = {}, {}, []
    old, now = Cluster(), 0.0
    for step in fx["steps"]:
        now += 2.0  # every stale chain is old enough at the next sync
        for s in step.get("services_add", []):
            services[s["metadata"]["name"]] = s
        for s in step.get("endpointSlices_add", []) + step.get("endpointSlices_update", []):
            slices[s["metadata"]["name"]] = s
        for name in step.get("services_delete", []):
            del services[name.split("/")[1]]
        new = Cluster.from_dicts(as_manifests(list(services.values()), list(slices.values())))
        result = proxier.sync(
            view_of(options, list(services.values()), list(slices.values())),
            changed_services(old, new) if proxier.syncs else None,
            now,
        )
        old = new
        assert result.ok, result.error
        for tx in (result.cleanup, result.transaction):
            if tx is not None and len(tx):
                scripts.append(render_transaction(proxier.table, tx))
    assert _real_list(scripts) == render_list(proxier.table)
