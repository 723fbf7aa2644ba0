"""Bad policies and pods are one-line errors naming the object, field and value: exit 2
from the CLI, no traceback; InputError from the Python API."""

from __future__ import annotations

import json

import pytest

from kproxy_emu.errors import InputError
from kproxy_emu.model import Cluster, NetworkPolicy, Pod
from kproxy_emu.policy import allowed, reachability

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "a", "namespace": "x"},
    "status": {"podIP": "10.0.0.1"},
}


def _policy(spec):
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "bad", "namespace": "x"},
        "spec": spec,
    }


def _ingress(**port):
    return {"podSelector": {}, "ingress": [{"ports": [port]}]}


def _from(peer):
    return {"podSelector": {}, "ingress": [{"from": [peer]}]}


BAD = [
    (
        _from({"ipBlock": {"cidr": "10.0.0.0/33"}}),
        "spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR: '10.0.0.0/33'",
    ),
    (
        _from({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["nope"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]: invalid CIDR: 'nope'",
    ),
    (
        _from({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]: must be a strict subset of cidr "
        "10.0.0.0/8: '11.0.0.0/16'",
    ),
    (
        _from({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        "spec.ingress[0].from[0]: may not specify both ipBlock and another peer",
    ),
    (
        _from({}),
        "spec.ingress[0].from[0]: must specify a peer (podSelector, namespaceSelector or ipBlock)",
    ),
    (
        _ingress(port=90, endPort=80),
        "spec.ingress[0].ports[0].endPort: must be greater than or equal to port (90): 80",
    ),
    (
        _ingress(port="web", endPort=80),
        "spec.ingress[0].ports[0].endPort: may not be specified when port is a named port: 80",
    ),
    (
        _ingress(endPort=80),
        "spec.ingress[0].ports[0].endPort: may not be specified when port is not specified: 80",
    ),
    (
        _ingress(port=80, protocol="ICMP"),
        "spec.ingress[0].ports[0].protocol: unknown protocol (must be TCP, UDP or SCTP): 'ICMP'",
    ),
    (_ingress(port=0), "spec.ingress[0].ports[0].port: must be between 1 and 65535: 0"),
    (
        _ingress(port="Not_A_Name"),
        "spec.ingress[0].ports[0].port: must be a port number or an IANA service name: "
        "'Not_A_Name'",
    ),
    (
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}},
        "spec.podSelector.matchExpressions[0].operator: must be one of In, NotIn, Exists, "
        "DoesNotExist: 'Equals'",
    ),
    (
        {
            "podSelector": {
                "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]
            }
        },
        "spec.podSelector.matchExpressions[0].values: must be empty for operator Exists: ['b']",
    ),
    (
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
        "spec.podSelector.matchExpressions[0].values: must be non-empty for operator In",
    ),
    (
        {"podSelector": {"matchLabels": {"a": "no spaces"}}},
        "spec.podSelector.matchLabels.a: invalid label value (at most 63 of A-Z a-z 0-9 - _ .): "
        "'no spaces'",
    ),
    (
        {"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]},
        "spec.policyTypes[1]: must be Ingress or Egress: 'Sideways'",
    ),
]


@pytest.mark.parametrize("spec, message", BAD, ids=[m.split(":")[0] + m[-12:] for _, m in BAD])
def test_bad_policy_is_one_line_exit_2(cli, tmp_path, spec, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [POD, _policy(spec)]}))
    r = cli("reach", path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == f"kproxy-emu: error: {path}: NetworkPolicy x/bad: {message}\n"
    # the same one line wherever manifests are read
    assert cli("check", path).stderr == r.stderr


@pytest.mark.parametrize("spec, message", BAD[:3], ids=["cidr", "except", "subset"])
def test_a_policy_built_by_hand_is_checked_when_evaluated(spec, message):
    cluster = Cluster()
    cluster.add(Pod("x", "a", pod_ips=["10.0.0.1"]))
    cluster.add(NetworkPolicy("x", "bad", spec=spec))
    for call in (
        lambda: reachability(cluster, 80),
        lambda: allowed(cluster, "10.0.0.9", "10.0.0.1", 80),
    ):
        with pytest.raises(InputError) as exc:
            call()
        assert str(exc.value) == f"NetworkPolicy x/bad: {message}"


def test_bad_container_ports(cli, tmp_path):
    pod = json.loads(json.dumps(POD))
    pod["spec"] = {
        "containers": [
            {"name": "c", "ports": [{"name": "web", "containerPort": 80}]},
            {"name": "d", "ports": [{"name": "web", "containerPort": 81}]},
        ]
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(pod))
    r = cli("reach", path)
    assert r.returncode == 2
    assert r.stderr == (
        f"kproxy-emu: error: {path}: Pod x/a: spec.containers[1].ports[0].name: "
        "duplicate port name in the pod: 'web'\n"
    )
    pod["spec"] = {"containers": [{"name": "c", "ports": [{"protocol": "UDP"}]}]}
    path.write_text(json.dumps(pod))
    assert cli("reach", path).stderr.endswith(
        "spec.containers[0].ports[0].containerPort: required field is missing\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "0"], "--port: must be between 1 and 65535: 0"),
        (["--port", "x"], "argument --port: invalid int value: 'x' (see kproxy-emu reach --help)"),
        (
            ["--protocol", "ICMP"],
            "argument --protocol: invalid choice: 'ICMP' (choose from 'TCP', 'UDP', 'SCTP') "
            "(see kproxy-emu reach --help)",
        ),
    ],
)
def test_bad_flags(cli, tmp_path, args, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(POD))
    r = cli("reach", path, *args)
    assert r.returncode == 2
    assert r.stderr == f"kproxy-emu: error: {message}\n"


def test_no_pods(cli, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": []}))
    r = cli("reach", path)
    assert r.returncode == 2
    assert r.stderr == "kproxy-emu: error: FILE: no pod with an IP to probe in the manifests\n"


def test_python_api_bad_probe():
    cluster = Cluster()
    with pytest.raises(InputError, match="protocol: unknown protocol"):
        reachability(cluster, 80, "ICMP")
    with pytest.raises(InputError, match="port: must be between 1 and 65535: 70000"):
        allowed(cluster, "10.0.0.1", "10.0.0.2", 70000)
    with pytest.raises(InputError, match="src: invalid IP address: 'nope'"):
        allowed(cluster, "nope", "10.0.0.2", 80)
    with pytest.raises(InputError, match="no such Pod"):
        reachability(cluster, 80, pods=["x/a"])
