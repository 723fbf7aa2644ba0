"""KubeProxyConfiguration and node-config loading (kproxy_emu.model.config)."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from kproxy_emu.errors import InputError
from kproxy_emu.model.config import (
    API_VERSION,
    KIND,
    ConntrackConfig,
    DetectLocalConfig,
    InterfaceAddress,
    IPTablesConfig,
    IPVSConfig,
    KubeProxyConfig,
    NFTablesConfig,
    NodeConfig,
    NodeFeatures,
    effective_tcp_be_liberal,
    format_duration,
    format_mark,
    load_kube_proxy_config,
    load_node_config,
    parse_duration,
)

HEAD = f"apiVersion: {API_VERSION}\nkind: {KIND}\n"


def write(tmp_path, text, name="kube-proxy.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def load_text(tmp_path, body, head=HEAD):
    return load_kube_proxy_config(write(tmp_path, head + textwrap.dedent(body)))


# ---------------------------------------------------------------- defaults


def test_empty_config_has_kube_proxy_defaults():
    cfg = KubeProxyConfig.from_dict({"apiVersion": API_VERSION, "kind": KIND})
    # v1alpha1/defaults.go, then server_linux.go platformApplyDefaults
    assert cfg.mode == "iptables"
    assert cfg.detect_local_mode == "ClusterCIDR"
    assert cfg.cluster_cidrs == ()
    assert cfg.detect_local == DetectLocalConfig("", "")
    assert cfg.iptables == IPTablesConfig(
        masquerade_all=False,
        masquerade_bit=14,
        localhost_node_ports=True,
        sync_period=30.0,
        min_sync_period=1.0,
    )
    assert cfg.ipvs == IPVSConfig(
        scheduler="rr",
        strict_arp=False,
        exclude_cidrs=(),
        tcp_timeout=0.0,
        tcp_fin_timeout=0.0,
        udp_timeout=0.0,
        sync_period=30.0,
        min_sync_period=0.0,
    )
    assert cfg.nftables == NFTablesConfig(
        masquerade_all=False, masquerade_bit=14, sync_period=30.0, min_sync_period=1.0
    )
    assert cfg.conntrack == ConntrackConfig(
        max_per_core=32768,
        min=131072,
        tcp_established_timeout=86400.0,
        tcp_close_wait_timeout=3600.0,
        tcp_be_liberal=False,
        udp_timeout=0.0,
        udp_stream_timeout=0.0,
    )
    assert cfg.node_port_addresses == ()
    assert cfg.effective_node_port_addresses == ()
    assert cfg.hostname_override == ""
    assert cfg.bind_address == "0.0.0.0"
    assert cfg.healthz_bind_address == "0.0.0.0:10256"
    assert cfg.metrics_bind_address == "127.0.0.1:10249"
    assert cfg.feature_gates == {}
    assert cfg.config_sync_period == 900.0
    assert cfg.oom_score_adj == -999
    assert cfg.masquerade_all is False
    assert cfg.masquerade_bit == 14
    assert cfg.masquerade_mark == 0x4000
    assert cfg.masquerade_mark_text == "0x00004000"
    assert cfg.sync_period == 30.0 and cfg.min_sync_period == 1.0
    assert cfg.localhost_node_ports is True
    # the dataclass defaults are the same defaults
    assert cfg == KubeProxyConfig()


def test_ipv6_bind_address_changes_default_healthz_and_metrics():
    cfg = KubeProxyConfig.from_dict(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "bindAddress": "fd00::2",
            "healthzBindAddress": "::",
        }
    )
    assert cfg.healthz_bind_address == "[::]:10256"  # AppendPortIfNeeded
    assert cfg.metrics_bind_address == "[::1]:10249"


def test_explicit_zero_durations_are_defaulted_like_defaults_go(tmp_path):
    # defaults.go checks `Duration == 0`, so an explicit 0s cannot switch these off
    cfg = load_text(
        tmp_path,
        """
        iptables: {syncPeriod: 0s, minSyncPeriod: 0s}
        ipvs: {syncPeriod: 0s, minSyncPeriod: 0s}
        nftables: {syncPeriod: "0", minSyncPeriod: 0s}
        configSyncPeriod: 0s
        conntrack: {tcpEstablishedTimeout: 0s, maxPerCore: 0}
    """,
    )
    assert cfg.iptables.sync_period == 30.0 and cfg.iptables.min_sync_period == 1.0
    assert cfg.ipvs.sync_period == 30.0 and cfg.ipvs.min_sync_period == 0.0
    assert cfg.nftables.sync_period == 30.0 and cfg.nftables.min_sync_period == 1.0
    assert cfg.config_sync_period == 900.0
    # pointer fields keep an explicit zero
    assert cfg.conntrack.tcp_established_timeout == 0.0
    assert cfg.conntrack.max_per_core == 0
    cfg = load_text(tmp_path, "iptables: {masqueradeBit: 0}\n")
    assert cfg.masquerade_bit == 0 and cfg.masquerade_mark_text == "0x00000001"


# ---------------------------------------------------------------- realistic files

KUBEADM_CONFIG_CONF = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"""


def test_kubeadm_generated_config_loads_with_defaults(tmp_path):
    """The config.conf kubeadm puts in the kube-proxy ConfigMap (zeros and nulls)."""
    cfg = load_kube_proxy_config(write(tmp_path, KUBEADM_CONFIG_CONF))
    expected = dataclasses.replace(
        KubeProxyConfig(), cluster_cidrs=("10.244.0.0/16", "fd00:10:244::/56")
    )
    assert cfg == expected
    assert cfg.source.endswith("kube-proxy.yaml")
    assert cfg.cluster_cidr_for("IPv4") == "10.244.0.0/16"
    assert cfg.cluster_cidr_for("IPv6") == "fd00:10:244::/56"
    assert cfg.cluster_cidr == "10.244.0.0/16,fd00:10:244::/56"


def test_tuned_config_loads(tmp_path):
    cfg = load_kube_proxy_config(
        write(
            tmp_path,
            """\
        apiVersion: kubeproxy.config.k8s.io/v1alpha1
        kind: KubeProxyConfiguration
        mode: ipvs
        clusterCIDR: 10.244.0.5/16
        detectLocalMode: InterfaceNamePrefix
        detectLocal:
          interfaceNamePrefix: veth
        hostnameOverride: worker-1
        bindAddress: 192.168.0.2
        healthzBindAddress: 192.168.0.2
        metricsBindAddress: 0.0.0.0:10249
        featureGates:
          TopologyAwareHints: true
        iptables:
          masqueradeAll: true
          masqueradeBit: 15
          localhostNodePorts: false
          syncPeriod: 1m
          minSyncPeriod: 10s
        ipvs:
          scheduler: wlc
          strictARP: true
          excludeCIDRs: [10.1.2.3/16, "fd00::/64"]
          tcpTimeout: 900s
          tcpFinTimeout: 2m0s
          udpTimeout: 300ms
          syncPeriod: 45s
          minSyncPeriod: 5s
        nodePortAddresses: [192.168.0.0/24, "fd00:1::/64"]
        conntrack:
          maxPerCore: 65536
          min: 262144
          tcpEstablishedTimeout: 12h
          tcpCloseWaitTimeout: 30m
          tcpBeLiberal: true
          udpTimeout: 30s
          udpStreamTimeout: 5m
        oomScoreAdj: -998
        configSyncPeriod: 10m
    """,
        )
    )
    assert cfg.mode == "ipvs"
    assert cfg.cluster_cidrs == ("10.244.0.0/16",)  # masked, as ParseCIDRSloppy re-prints it
    assert cfg.detect_local_mode == "InterfaceNamePrefix"
    assert cfg.detect_local.interface_name_prefix == "veth"
    assert cfg.hostname_override == "worker-1"
    assert cfg.healthz_bind_address == "192.168.0.2:10256"
    assert cfg.feature_gates == {"TopologyAwareHints": True}
    assert cfg.ipvs == IPVSConfig(
        scheduler="wlc",
        strict_arp=True,
        exclude_cidrs=("10.1.0.0/16", "fd00::/64"),
        tcp_timeout=900.0,
        tcp_fin_timeout=120.0,
        udp_timeout=0.3,
        sync_period=45.0,
        min_sync_period=5.0,
    )
    assert cfg.node_port_addresses == ("192.168.0.0/24", "fd00:1::/64")
    assert cfg.conntrack == ConntrackConfig(65536, 262144, 43200.0, 1800.0, True, 30.0, 300.0)
    assert cfg.oom_score_adj == -998 and cfg.config_sync_period == 600.0
    # IPVS mode reads the ipvs sync periods but iptables' masqueradeAll / masqueradeBit
    assert (cfg.sync_period, cfg.min_sync_period) == (45.0, 5.0)
    assert cfg.masquerade_all is True
    assert cfg.masquerade_bit == 15 and cfg.masquerade_mark_text == "0x00008000"
    assert cfg.localhost_node_ports is False


def test_nftables_mode_reads_nftables_section(tmp_path):
    cfg = load_text(
        tmp_path,
        """
        mode: nftables
        iptables: {masqueradeAll: false, masqueradeBit: 14, syncPeriod: 1h}
        nftables: {masqueradeAll: true, masqueradeBit: 3, syncPeriod: 20s, minSyncPeriod: 2s}
    """,
    )
    assert cfg.masquerade_all is True
    assert cfg.masquerade_bit == 3 and cfg.masquerade_mark == 8
    assert (cfg.sync_period, cfg.min_sync_period) == (20.0, 2.0)
    assert cfg.effective_node_port_addresses == ("primary",)  # server_linux.go default
    assert cfg.localhost_node_ports is False


def test_kubeadm_multi_document_file(tmp_path):
    path = write(
        tmp_path,
        """\
        apiVersion: kubeadm.k8s.io/v1beta3
        kind: ClusterConfiguration
        networking:
          podSubnet: 10.244.0.0/16
        ---
        apiVersion: kubeproxy.config.k8s.io/v1alpha1
        kind: KubeProxyConfiguration
        mode: nftables
        clusterCIDR: 10.244.0.0/16
    """,
    )
    cfg = load_kube_proxy_config(path)
    assert cfg.mode == "nftables" and cfg.cluster_cidrs == ("10.244.0.0/16",)


def test_kube_proxy_configmap(tmp_path):
    path = write(
        tmp_path,
        """\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: kube-proxy
          namespace: kube-system
        data:
          config.conf: |-
            apiVersion: kubeproxy.config.k8s.io/v1alpha1
            kind: KubeProxyConfiguration
            mode: ipvs
            ipvs:
              scheduler: lbx
          kubeconfig.conf: |-
            apiVersion: v1
            kind: Config
    """,
    )
    with pytest.raises(InputError) as exc:
        load_kube_proxy_config(path)
    msg = str(exc.value)
    # the line is the line in the ConfigMap file
    assert ":12: KubeProxyConfiguration: ipvs.scheduler:" in msg and "'lbx'" in msg
    with open(path) as fh:
        good = write(tmp_path, fh.read().replace("lbx", "sh"), "cm.yaml")
    assert load_kube_proxy_config(good).ipvs.scheduler == "sh"


# ---------------------------------------------------------------- bad input

BAD_CASES = {
    "bad mode": (
        "mode: userspace\n",
        "mode",
        "'userspace'",
        "must be iptables, ipvs, nftables or blank",
    ),
    "kernelspace mode": ("mode: kernelspace\n", "mode", "'kernelspace'", None),
    "masqueradeBit 32": (
        "iptables:\n  masqueradeBit: 32\n",
        "iptables.masqueradeBit",
        ": 32",
        "[0, 31]",
    ),
    "masqueradeBit -1": (
        "iptables:\n  masqueradeBit: -1\n",
        "iptables.masqueradeBit",
        ": -1",
        None,
    ),
    "nft masqueradeBit": (
        "mode: nftables\nnftables:\n  masqueradeBit: 40\n",
        "nftables.masqueradeBit",
        ": 40",
        None,
    ),
    "masqueradeBit not int": (
        "iptables:\n  masqueradeBit: '14'\n",
        "iptables.masqueradeBit",
        "'14'",
        "integer",
    ),
    "bad cluster CIDR": (
        "clusterCIDR: 10.0.0.0/33\n",
        "clusterCIDR",
        "'10.0.0.0/33'",
        "valid CIDR",
    ),
    "cluster CIDR no prefix": ("clusterCIDR: 10.0.0.0\n", "clusterCIDR", "'10.0.0.0'", None),
    "two v4 cluster CIDRs": (
        "clusterCIDR: 10.0.0.0/8,192.168.0.0/16\n",
        "clusterCIDR",
        "'10.0.0.0/8,192.168.0.0/16'",
        "DualStack",
    ),
    "three cluster CIDRs": (
        "clusterCIDR: 10.0.0.0/8,fd00::/64,192.168.0.0/16\n",
        "clusterCIDR",
        None,
        "only one CIDR",
    ),
    "bad nodePortAddresses": (
        "nodePortAddresses: [10.0.0.0/8, 1.2.3]\n",
        "nodePortAddresses[1]",
        "'1.2.3'",
        "valid CIDR",
    ),
    "primary mixed": (
        "nodePortAddresses: [primary, 10.0.0.0/8]\n",
        "nodePortAddresses[0]",
        "'primary'",
        "both 'primary' and CIDRs",
    ),
    "bad duration": (
        "iptables:\n  syncPeriod: 30 sec\n",
        "iptables.syncPeriod",
        "'30 sec'",
        "invalid duration",
    ),
    "duration without unit": (
        "conntrack:\n  udpTimeout: '30'\n",
        "conntrack.udpTimeout",
        "'30'",
        "missing unit",
    ),
    "duration as number": (
        "conntrack:\n  udpTimeout: 30\n",
        "conntrack.udpTimeout",
        ": 30",
        "duration string",
    ),
    "unknown top field": ("masqueradeAll: true\n", "masqueradeAll", None, "unknown field"),
    "unknown nested field": (
        "iptables:\n  masqueradeBits: 14\n",
        "iptables.masqueradeBits",
        None,
        'did you mean "masqueradeBit"',
    ),
    "wrong case field": ("IPTables: {}\n", "IPTables", None, 'did you mean "iptables"'),
    "duplicate field": ("mode: ipvs\nmode: iptables\n", "mode", None, "duplicate field"),
    "BridgeInterface without bridgeInterface": (
        "detectLocalMode: BridgeInterface\ndetectLocal:\n  interfaceNamePrefix: eth\n",
        "detectLocal.bridgeInterface",
        "''",
        "must not be empty",
    ),
    "InterfaceNamePrefix without prefix": (
        "detectLocalMode: InterfaceNamePrefix\n",
        "detectLocal.interfaceNamePrefix",
        "''",
        None,
    ),
    "bad detectLocalMode": (
        "detectLocalMode: Guess\n",
        "detectLocalMode",
        "'Guess'",
        "supported values",
    ),
    "bad scheduler": (
        "mode: ipvs\nipvs:\n  scheduler: lbx\n",
        "ipvs.scheduler",
        "'lbx'",
        "rr, wrr",
    ),
    "bad exclude CIDR": (
        "mode: ipvs\nipvs:\n  excludeCIDRs: [10.0.0.0/8, nope]\n",
        "ipvs.excludeCIDRs[1]",
        "'nope'",
        None,
    ),
    "negative ipvs timeout": (
        "mode: ipvs\nipvs:\n  tcpTimeout: -1s\n",
        "ipvs.tcpTimeout",
        "'-1s'",
        "greater than or equal to 0",
    ),
    "sync below min": (
        "iptables:\n  syncPeriod: 1s\n  minSyncPeriod: 2s\n",
        "iptables.syncPeriod",
        "'1s'",
        "iptables.minSyncPeriod",
    ),
    "negative min sync": (
        "mode: nftables\nnftables:\n  minSyncPeriod: -1s\n",
        "nftables.minSyncPeriod",
        "'-1s'",
        None,
    ),
    "negative conntrack": ("conntrack:\n  maxPerCore: -1\n", "conntrack.maxPerCore", ": -1", None),
    "bad bind address": (
        "bindAddress: 10.10.12.11:2000\n",
        "bindAddress",
        "'10.10.12.11:2000'",
        "IP address",
    ),
    "bad healthz port": (
        "healthzBindAddress: 0.0.0.0:0\n",
        "healthzBindAddress",
        "'0'",
        "valid port",
    ),
    "bad oomScoreAdj": ("oomScoreAdj: 1001\n", "oomScoreAdj", ": 1001", "[-1000, 1000]"),
    "feature gate not bool": (
        "featureGates:\n  Foo: 'yes please'\n",
        "featureGates.Foo",
        "'yes please'",
        None,
    ),
    "bool as string": (
        "iptables:\n  masqueradeAll: 'true'\n",
        "iptables.masqueradeAll",
        "'true'",
        "true or false",
    ),
    "section not a mapping": ("iptables: 14\n", "iptables", ": 14", "mapping"),
}


@pytest.mark.parametrize("body,field,value,message", BAD_CASES.values(), ids=BAD_CASES.keys())
def test_bad_kube_proxy_config(tmp_path, body, field, value, message):
    with pytest.raises(InputError) as exc:
        load_text(tmp_path, body)
    err = exc.value
    text = str(err)
    assert "kube-proxy.yaml" in text
    assert "KubeProxyConfiguration" in text
    assert f": {field}: " in text
    if value is not None:
        assert value in text
    if message is not None:
        assert message in text
    assert "\n" not in text
    assert err.field == field


def test_error_line_numbers(tmp_path):
    with pytest.raises(InputError) as exc:
        load_text(tmp_path, "mode: iptables\niptables:\n  masqueradeBit: 32\n")
    assert exc.value.line == 5
    assert str(exc.value) == (
        f"{tmp_path}/kube-proxy.yaml:5: KubeProxyConfiguration: "
        "iptables.masqueradeBit: must be within the range [0, 31]: 32"
    )


def test_cross_field_error_points_at_the_mode_line(tmp_path):
    with pytest.raises(InputError) as exc:
        load_text(tmp_path, "mode: iptables\ndetectLocalMode: BridgeInterface\n")
    assert exc.value.line == 4 and exc.value.field == "detectLocal.bridgeInterface"


def test_ipvs_section_checked_only_in_ipvs_mode(tmp_path):
    # validation.go validates the ipvs section only when mode is ipvs
    cfg = load_text(tmp_path, "mode: iptables\nipvs:\n  scheduler: lbx\n")
    assert cfg.ipvs.scheduler == "lbx"


@pytest.mark.parametrize(
    "head,field,message",
    [
        (
            f"apiVersion: {API_VERSION}\nkind: KubeletConfiguration\n",
            "kind",
            "'KubeletConfiguration'",
        ),
        (f"apiVersion: {API_VERSION}\n", "kind", "missing"),
        (
            f"apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: {KIND}\n",
            "apiVersion",
            "'kubeproxy.config.k8s.io/v1alpha2'",
        ),
        (f"kind: {KIND}\n", "apiVersion", "missing"),
    ],
)
def test_wrong_kind_or_api_version(tmp_path, head, field, message):
    with pytest.raises(InputError) as exc:
        load_text(tmp_path, "mode: iptables\n", head=head)
    assert f": {field}: " in str(exc.value) and message in str(exc.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, HEAD + "iptables:\n  masqueradeBit: 14\n   syncPeriod: [30s\n")
    with pytest.raises(InputError) as exc:
        load_kube_proxy_config(path)
    assert exc.value.file == path
    assert exc.value.line in (4, 5)
    assert str(exc.value).startswith(f"{path}:{exc.value.line}: YAML syntax error")


def test_unreadable_and_empty_files(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="no such file") as exc:
        load_kube_proxy_config(missing)
    assert str(exc.value).startswith(missing)
    with pytest.raises(InputError, match="empty file"):
        load_kube_proxy_config(write(tmp_path, "# nothing\n"))
    with pytest.raises(InputError, match="must be a mapping"):
        load_kube_proxy_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(InputError, match="no KubeProxyConfiguration document"):
        load_kube_proxy_config(write(tmp_path, "kind: A\n---\nkind: B\n"))
    with pytest.raises(InputError, match="is a directory"):
        load_kube_proxy_config(str(tmp_path))


def test_validate_after_overrides():
    cfg = KubeProxyConfig()
    cfg.mode = "nftables"
    cfg.cluster_cidrs = ("10.0.0.1/8",)
    cfg.validate()
    assert cfg.cluster_cidrs == ("10.0.0.0/8",)
    cfg.iptables.masquerade_bit = 40
    with pytest.raises(InputError, match=r"iptables\.masqueradeBit"):
        cfg.validate()


# ---------------------------------------------------------------- durations and marks


@pytest.mark.parametrize(
    "text,seconds,printed",
    [
        ("30s", 30.0, "30s"),
        ("1h0m0s", 3600.0, "1h0m0s"),
        ("500ms", 0.5, "500ms"),
        ("24h", 86400.0, "24h0m0s"),
        ("15m", 900.0, "15m0s"),
        ("1.5h", 5400.0, "1h30m0s"),
        ("1m30.25s", 90.25, "1m30.25s"),
        ("0", 0.0, "0s"),
        ("-2s", -2.0, "-2s"),
        ("250us", 0.00025, "250\u00b5s"),
        ("1\u00b5s", 0.000001, "1\u00b5s"),
        ("10ns", 1e-8, "10ns"),
        (".5s", 0.5, "500ms"),
    ],
)
def test_go_durations(text, seconds, printed):
    assert parse_duration(text) == pytest.approx(seconds)
    assert format_duration(parse_duration(text)) == printed


@pytest.mark.parametrize("text", ["", "30", "30 sec", "1d", "s", ".s", "1h-1m", "-", "5 s"])
def test_bad_go_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_mark_formatting():
    assert format_mark(14) == "0x00004000"
    assert format_mark(0) == "0x00000001"
    assert format_mark(31) == "0x80000000"
    cfg = KubeProxyConfig()
    cfg.iptables.masquerade_bit = 31
    assert cfg.masquerade_mark == 0x80000000 and cfg.masquerade_mark_text == "0x80000000"


# ---------------------------------------------------------------- NodeConfig

DESIGN_NODE = """\
name: test-hostname          # matches EndpointSlice nodeName
ips: [192.168.0.2, 192.168.1.2, 192.168.99.11]   # primary first
interfaces:                  # optional: addresses per interface
  lo: [127.0.0.1/8, "::1/128"]
  eth0: [192.168.0.2/24, 192.168.1.2/24, 192.168.99.11/24]
zone: zone-a                 # optional
features:                    # what the node's iptables and kernel support
  iptablesRandomFully: true  # MASQUERADE --random-fully available
  nfacct: true               # kube-proxy's nfacct counters can be created
  conntrackTCPBeLiberal: false
"""


def test_node_config_from_design(tmp_path):
    node = load_node_config(write(tmp_path, DESIGN_NODE, "node.yaml"))
    assert node.name == "test-hostname"
    assert node.ips == ("192.168.0.2", "192.168.1.2", "192.168.99.11")
    assert node.primary_ip == "192.168.0.2" and node.primary_family == "IPv4"
    assert node.interfaces["eth0"][1] == InterfaceAddress("192.168.1.2", 24)
    assert str(node.interfaces["lo"][1]) == "::1/128"
    assert node.interfaces["eth0"][0].network == "192.168.0.0/24"
    assert node.zone == "zone-a"
    assert node.features == NodeFeatures(True, True, False)
    assert node.local_ips == ("127.0.0.1", "::1", "192.168.0.2", "192.168.1.2", "192.168.99.11")


def test_node_config_defaults():
    node = NodeConfig.from_dict({"name": "n1", "ips": ["10.0.0.2", "fd00::0002"]})
    assert node.ips == ("10.0.0.2", "fd00::2")
    assert node.interfaces == {
        "lo": (InterfaceAddress("127.0.0.1", 8), InterfaceAddress("::1", 128)),
        "eth0": (InterfaceAddress("10.0.0.2", 24), InterfaceAddress("fd00::2", 64)),
    }
    assert node.zone is None and node.pod_cidrs == ()
    assert node.features == NodeFeatures(
        iptables_random_fully=True, nfacct=True, conntrack_tcp_be_liberal=False
    )
    assert node.node_ips_by_family() == {"IPv4": "10.0.0.2", "IPv6": "fd00::2"}


def test_node_from_node_object_values():
    node = NodeConfig.from_node(
        "worker-2",
        ["fd00::5", "10.1.0.5"],
        zone="zone-b",
        pod_cidrs=["10.244.1.0/24", "fd00:10:244:1::/64"],
    )
    assert node.primary_family == "IPv6"
    assert node.zone == "zone-b"
    assert node.pod_cidr_for("IPv4") == "10.244.1.0/24"
    assert node.interfaces["eth0"] == (
        InterfaceAddress("fd00::5", 64),
        InterfaceAddress("10.1.0.5", 24),
    )
    with pytest.raises(InputError, match=r"Node worker-3: ips\[0\]: not a valid IP address"):
        NodeConfig.from_node("worker-3", ["10.0.0.300"])


def test_tcp_be_liberal_from_config_or_node():
    node = NodeConfig.from_dict({"name": "n", "ips": ["10.0.0.2"]})
    cfg = KubeProxyConfig()
    assert effective_tcp_be_liberal(cfg, node) is False
    cfg.conntrack.tcp_be_liberal = True
    assert effective_tcp_be_liberal(cfg, node) is True


BAD_NODES = {
    "missing name": ("ips: [10.0.0.2]\n", "name", None, "missing"),
    "bad name": ("name: Node_1\nips: [10.0.0.2]\n", "name", "'Node_1'", "RFC 1123"),
    "no ips": ("name: n1\n", "ips", None, "at least one"),
    "bad node IP": (
        "name: n1\nips: [10.0.0.2, 10.0.0.256]\n",
        "ips[1]",
        "'10.0.0.256'",
        "not a valid IP address",
    ),
    "ip not a string": ("name: n1\nips: [167772162]\n", "ips[0]", ": 167772162", None),
    "duplicate ip": (
        "name: n1\nips: [10.0.0.2, 10.0.0.02]\n",
        "ips[1]",
        "'10.0.0.02'",
        "duplicate",
    ),
    "bad interface CIDR": (
        "name: n1\nips: [10.0.0.2]\ninterfaces:\n  eth0: [10.0.0.2/33]\n",
        "interfaces.eth0[0]",
        "'10.0.0.2/33'",
        "ADDRESS/PREFIX",
    ),
    "interface address without prefix": (
        "name: n1\nips: [10.0.0.2]\ninterfaces:\n  eth0: [10.0.0.2]\n",
        "interfaces.eth0[0]",
        "'10.0.0.2'",
        None,
    ),
    "ip on no interface": (
        "name: n1\nips: [10.0.0.2]\ninterfaces:\n  eth0: [10.0.0.3/24]\n",
        "ips[0]",
        "'10.0.0.2'",
        "not an address of any interface",
    ),
    "long ifname": (
        "name: n1\nips: [10.0.0.2]\ninterfaces:\n  averyverylongname0: []\n",
        "interfaces.averyverylongname0",
        None,
        "15 characters",
    ),
    "unknown field": (
        "name: n1\nips: [10.0.0.2]\nzones: a\n",
        "zones",
        None,
        'did you mean "zone"',
    ),
    "unknown feature": (
        "name: n1\nips: [10.0.0.2]\nfeatures:\n  randomFully: true\n",
        "features.randomFully",
        None,
        "unknown field",
    ),
    "bad pod CIDR": (
        "name: n1\nips: [10.0.0.2]\npodCIDRs: [10.244.0.0]\n",
        "podCIDRs[0]",
        "'10.244.0.0'",
        None,
    ),
}


@pytest.mark.parametrize("text,field,value,message", BAD_NODES.values(), ids=BAD_NODES.keys())
def test_bad_node_config(tmp_path, text, field, value, message):
    with pytest.raises(InputError) as exc:
        load_node_config(write(tmp_path, text, "node.yaml"))
    msg = str(exc.value)
    assert "node.yaml:" in msg and "NodeConfig" in msg
    assert f": {field}: " in msg
    if value is not None:
        assert value in msg
    if message is not None:
        assert message in msg


def test_node_config_yaml_errors(tmp_path):
    with pytest.raises(
        InputError,
        match=r"node\.yaml:3: YAML syntax error: .*flow sequence "
        r"started at line 2\)",
    ):
        load_node_config(write(tmp_path, "name: n1\nips: [10.0.0.2\n", "node.yaml"))
    with pytest.raises(InputError, match="must be a mapping"):
        load_node_config(write(tmp_path, "just a string\n", "node.yaml"))
    with pytest.raises(InputError, match="no such file"):
        load_node_config(tmp_path / "missing.yaml")


def test_node_config_duplicate_field_and_from_dict_errors(tmp_path):
    with pytest.raises(InputError) as exc:
        load_node_config(write(tmp_path, "name: n1\nips: [10.0.0.2]\nname: n2\n", "node.yaml"))
    assert str(exc.value).endswith("node.yaml:3: NodeConfig n2: name: duplicate field")
    with pytest.raises(InputError) as exc:
        NodeConfig.from_dict({"name": "n1", "ips": ["10.0.0.2"], "features": {"nfacct": 1}})
    assert str(exc.value) == "NodeConfig n1: features.nfacct: must be true or false: 1"


def test_json_config_and_from_dict_errors(tmp_path):
    path = write(
        tmp_path,
        f'{{"apiVersion": "{API_VERSION}", "kind": "{KIND}", "mode": "nftables"}}',
        "kube-proxy.json",
    )
    assert load_kube_proxy_config(path).mode == "nftables"
    with pytest.raises(InputError) as exc:
        KubeProxyConfig.from_dict(
            {"apiVersion": API_VERSION, "kind": KIND, "iptables": {"masqueradeBit": 32}},
            file="cfg.yaml",
        )
    assert str(exc.value) == (
        "cfg.yaml: KubeProxyConfiguration: iptables.masqueradeBit: "
        "must be within the range [0, 31]: 32"
    )
