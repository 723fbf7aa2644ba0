"""Every kind of bad input gets one clear line naming file, object, field and value."""

import json

import pytest

from kproxy_emu.errors import InputError
from kproxy_emu.model import Cluster

SVC = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "ns1"},
    "spec": {"clusterIP": "172.30.0.10", "ports": [{"name": "http", "port": 80}]},
}
SLICE = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "web-1",
        "namespace": "ns1",
        "labels": {"kubernetes.io/service-name": "web"},
    },
    "addressType": "IPv4",
    "endpoints": [{"addresses": ["10.0.0.1"]}],
    "ports": [{"name": "http", "port": 8080}],
}


def _patched(base, path, value):
    obj = json.loads(json.dumps(base))
    node = obj
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return obj


BAD = [
    # (object, path to change, new value, expected field, expected text)
    (SVC, "spec.clusterIP", "172.30.0.300", "spec.clusterIP", "invalid IP address: '172.30.0.300'"),
    (SVC, "spec.ports.0.port", 70000, "spec.ports[0].port", "must be between 1 and 65535: 70000"),
    (SVC, "spec.ports.0.port", 0, "spec.ports[0].port", "must be between 1 and 65535: 0"),
    (SVC, "spec.ports.0.port", "80", "spec.ports[0].port", "must be an integer: '80'"),
    (SVC, "spec.ports.0.port", KeyError, "spec.ports[0].port", "required field is missing"),
    (SVC, "spec.ports.0.protocol", "ICMP", "spec.ports[0].protocol", "unknown protocol"),
    (SVC, "spec.ports.0.nodePort", 65536, "spec.ports[0].nodePort", "65536"),
    (SVC, "spec.ports.0.targetPort", "Not_A_Name", "spec.ports[0].targetPort", "'Not_A_Name'"),
    (SVC, "spec.ports", KeyError, "spec.ports", "required field is missing"),
    (SVC, "spec.type", "Ingress", "spec.type", "'Ingress'"),
    (SVC, "spec.externalIPs", ["1.2.3"], "spec.externalIPs[0]", "invalid IP address: '1.2.3'"),
    (
        SVC,
        "spec.loadBalancerSourceRanges",
        ["10.0.0.0/33"],
        "spec.loadBalancerSourceRanges[0]",
        "invalid CIDR: '10.0.0.0/33'",
    ),
    (SVC, "spec.sessionAffinity", "Cookie", "spec.sessionAffinity", "'Cookie'"),
    (SVC, "spec.externalTrafficPolicy", "Global", "spec.externalTrafficPolicy", "'Global'"),
    (SVC, "spec.ipFamilies", ["IPv5"], "spec.ipFamilies[0]", "'IPv5'"),
    (SVC, "spec.type", "ExternalName", "spec.externalName", "required for type ExternalName"),
    (SVC, "metadata.name", KeyError, "metadata.name", "required field is missing"),
    (SLICE, "addressType", "IPv7", "addressType", "'IPv7'"),
    (SLICE, "addressType", KeyError, "addressType", "required field is missing"),
    (
        SLICE,
        "endpoints.0.addresses",
        ["10.0.0.256"],
        "endpoints[0].addresses[0]",
        "invalid IP address: '10.0.0.256'",
    ),
    (
        SLICE,
        "endpoints.0.addresses",
        ["fd00::1"],
        "endpoints[0].addresses[0]",
        "not an IPv4 address: 'fd00::1'",
    ),
    (SLICE, "endpoints.0.addresses", [], "endpoints[0].addresses", "at least one address"),
    (
        SLICE,
        "endpoints.0.conditions",
        {"ready": "yes"},
        "endpoints[0].conditions.ready",
        "must be true or false: 'yes'",
    ),
    (SLICE, "ports.0.port", -1, "ports[0].port", "-1"),
    (SLICE, "ports.0.protocol", "tcp", "ports[0].protocol", "unknown protocol"),
]


@pytest.mark.parametrize(
    "base,path,value,field,text", BAD, ids=[f"{b['kind']}:{p}={v!r}" for b, p, v, _, _ in BAD]
)
def test_bad_field_names_file_object_field_and_value(write, base, path, value, field, text):
    bad = _patched(base, path, value)
    file = write("bad.json", json.dumps({"apiVersion": "v1", "kind": "List", "items": [bad]}))
    with pytest.raises(InputError) as info:
        Cluster.from_files(file)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{file}: {base['kind']}")
    assert f": {field}: " in message
    assert text in message
    if path != "metadata.name":
        assert f"{base['kind']} ns1/" in message


def test_yaml_syntax_error_names_file_and_line(write):
    file = write("broken.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: [oops\n")
    with pytest.raises(InputError, match=r"broken\.yaml:\d+: YAML syntax error"):
        Cluster.from_files(file)


def test_json_syntax_error_names_file_and_line(write):
    file = write("broken.json", '{"apiVersion": "v1",\n "kind": }')
    with pytest.raises(InputError, match=r"broken\.json:2: JSON syntax error"):
        Cluster.from_files(file)


def test_duplicate_object_names_both_files(write):
    a = write("a.json", json.dumps(SVC))
    b = write("b.json", json.dumps(SVC))
    with pytest.raises(InputError) as info:
        Cluster.from_files([a, b])
    assert str(info.value) == f"{b}: Service ns1/web: duplicate object (first defined in {a})"


@pytest.mark.parametrize(
    "doc,text",
    [
        ({"apiVersion": "v1", "metadata": {"name": "x"}}, "kind: required field is missing"),
        (
            {"apiVersion": "v2", "kind": "Service", "metadata": {"name": "x"}},
            "Service x: apiVersion: unsupported apiVersion (expected v1): 'v2'",
        ),
        ([1, 2], "document must be a mapping"),
    ],
)
def test_structural_errors(write, doc, text):
    with pytest.raises(InputError, match=text.replace("(", r"\(").replace(")", r"\)")):
        Cluster.from_files(write("x.json", json.dumps(doc)))


def test_missing_file_and_empty_directory(tmp_path):
    with pytest.raises(InputError, match=r"nope\.yaml: no such file or directory"):
        Cluster.from_files(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match=r"no \.yaml, \.yml or \.json files"):
        Cluster.from_files(tmp_path)
