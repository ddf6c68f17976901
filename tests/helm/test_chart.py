"""The Helm chart helm/shoal, rendered without helm and checked as Kubernetes and shoal would.

For the default values and for each switch (TLS from a Secret or cert-manager, external
Redis, HPA, ServiceMonitor, NetworkPolicy, WebSocket, passwords and ACLs, the cluster
secret), every rendered document must parse, carry the fields its kind requires, select the
right pods, agree on ports with the containers, probes and shoal.conf, pass yamllint, and
its shoal.conf must pass `shoal -t` with the files the pod would have mounted. The schema
must refuse typos and wrong types, the Dockerfile must build the image the chart expects,
and the `helm test` pod's script must pass against a real node (and fail against one that
refuses it).

SHOAL_BIN: the shoal binary (default build/shoal); SHOAL_BENCH: shoal-bench next to it.
"""

import copy
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chartlib  # noqa: E402
from chartlib import RenderError, find, one  # noqa: E402

SRC = chartlib.SRC
SHOAL_BIN = Path(os.environ.get("SHOAL_BIN") or SRC / "build" / "shoal")
SHOAL_BENCH = Path(os.environ.get("SHOAL_BENCH") or SHOAL_BIN.parent / "shoal-bench")
YAMLLINT_CONF = Path(__file__).resolve().parent / "yamllint.yaml"
UID = 10001

CLIENT_PORT_NAMES = ("mqtt", "mqtts", "ws", "wss")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


def _passwd_content():
    tool = SHOAL_BIN.parent / "shoal-passwd"
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"chart-passwd-{os.getpid()}"
    try:
        subprocess.run([str(tool), "-c", "-b", str(path), "alice", "s3cret"], check=True,
                       capture_output=True)
        return path.read_text()
    finally:
        path.unlink(missing_ok=True)


# name -> values merged over values.yaml (given to the renderer as a -f file).
SCENARIOS = {
    "default": {},
    "tls-existing-secret": {
        "tls": {"enabled": True, "existingSecret": "broker-tls", "requireCertificate": True,
                "version": "tlsv1.3"},
    },
    "cert-manager-tls-only": {
        "mqtt": {"enabled": False},
        "tls": {"enabled": True, "port": 8883,
                "certManager": {"enabled": True,
                                "issuerRef": {"name": "ca", "kind": "ClusterIssuer"},
                                "extraDnsNames": ["mqtt.example.org"]}},
    },
    "external-redis-url": {
        "redis": {"enabled": False},
        "externalRedis": {"url": "redis://redis.data.svc.cluster.local:6380/2"},
    },
    "external-redis-secret": {
        "redis": {"enabled": False},
        "externalRedis": {"existingSecret": "redis-credentials", "key": "url"},
    },
    "hpa": {
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 7,
                        "targetMemoryUtilizationPercentage": 80},
    },
    "service-monitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {"metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
    },
    "network-policy-off": {
        "networkPolicy": {"enabled": False},
    },
    "websocket": {
        "websocket": {"enabled": True, "secure": {"enabled": True}},
        "tls": {"enabled": True, "existingSecret": "broker-tls"},
    },
    "password-and-acl": {
        "auth": {"allowAnonymous": False,
                 "passwordFile": {"content": "@passwd"},
                 "aclFile": {"content": "user alice\ntopic readwrite shoal-helm-test/#\n"}},
        "test": {"username": "alice", "password": "s3cret"},
    },
    "password-and-acl-existing": {
        "auth": {"allowAnonymous": False,
                 "passwordFile": {"existingSecret": "mqtt-users", "key": "passwd"},
                 "aclFile": {"existingSecret": "mqtt-acl", "key": "acl"}},
    },
    "cluster-secret-value": {
        "cluster": {"name": "fleet-a", "port": 4370, "secret": {"value": "0123456789abcdef"}},
    },
    "cluster-secret-existing": {
        "cluster": {"secret": {"existingSecret": "shoal-peers", "key": "token"}},
    },
    "cluster-secret-off": {
        "cluster": {"secret": {"enabled": False}},
    },
    "everything": {
        "fullnameOverride": "mqtt",
        "replicaCount": 5,
        "mqtt": {"port": 11883, "maxConnections": 50000},
        "http": {"port": 9100},
        "tls": {"enabled": True, "port": 18883, "useIdentityAsUsername": True,
                "certManager": {"enabled": True, "issuerRef": {"name": "internal-ca"}}},
        "websocket": {"enabled": True, "port": 18083},
        "redis": {"persistence": {"enabled": False}, "extraArgs": ["--save", ""]},
        "config": {"max_queued_messages": 5000, "persistent_client_expiration": "2d",
                   "max_inflight_messages": 40, "set_tcp_nodelay": True,
                   "message_size_limit": 1000000},
        "extraConfig": "max_keepalive 300\nsys_interval 30\n",
        "logging": {"types": ["error", "warning", "notice"], "timestamp": True},
        "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                    "loadBalancerSourceRanges": ["192.0.2.0/24"],
                    "nodePorts": {"mqtt": 31883}},
        "podAntiAffinity": "hard",
        "topologySpread": {"enabled": True},
        "autoscaling": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "podAnnotations": {"example.org/team": "iot"},
        "extraEnv": [{"name": "MALLOC_ARENA_MAX", "value": "2"}],
        "priorityClassName": "high",
    },
}

# Scenarios rendered with another release name, namespace or Kubernetes version.
SCENARIO_RENDER_ARGS = {
    "everything": {"release": "prod", "namespace": "iot", "kube_version": "v1.30.2"},
    "hpa": {"release": "shoal-edge"},
}

_cache = {}


@pytest.fixture(scope="session")
def values_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("values")


def scenario_values(name):
    vals = copy.deepcopy(SCENARIOS[name])
    pw = vals.get("auth", {}).get("passwordFile", {})
    if pw.get("content") == "@passwd":
        pw["content"] = _passwd_content()
    return vals


def rendered(name, values_dir):
    """(docs, text) of a scenario, rendered once per session."""
    if name not in _cache:
        f = values_dir / f"{name}.yaml"
        f.write_text(yaml.safe_dump(scenario_values(name)))
        text = chartlib.render_text(values_files=[f], **SCENARIO_RENDER_ARGS.get(name, {}))
        docs = [yaml.safe_load(c) for _, c in chartlib.split_sources(text)]
        _cache[name] = ([d for d in docs if d is not None], text)
    return _cache[name]


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request, values_dir):
    docs, text = rendered(request.param, values_dir)
    return request.param, docs, text


# ---- helpers -----------------------------------------------------------------------------

def pod_spec(doc):
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return doc["spec"]
    raise AssertionError(doc["kind"])


def pod_labels(doc):
    if doc["kind"] == "Pod":
        return doc["metadata"].get("labels", {})
    return doc["spec"]["template"]["metadata"]["labels"]


def matches(selector, labels):
    """A matchLabels map (or a Service's plain selector) against a label set."""
    sel = selector.get("matchLabels", selector) if "matchExpressions" not in selector else None
    assert sel is not None, "matchExpressions are not used by the chart"
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def workloads(docs):
    return find(docs, "Deployment") + find(docs, "StatefulSet")


def selected_workloads(docs, selector):
    return [w for w in workloads(docs) if matches(selector, pod_labels(w))]


def container_ports(doc):
    ports = {}
    for c in pod_spec(doc)["containers"]:
        for p in c.get("ports", []):
            ports[p["name"]] = p["containerPort"]
    return ports


def shoal_container(docs):
    return next(c for c in pod_spec(one(docs, "Deployment"))["containers"]
                if c["name"] == "shoal")


def conf_listeners(conf):
    """{port: {"protocol": ..., "tls": bool}} of shoal.conf's MQTT listeners, plus the
    cluster and http listener ports."""
    listeners, cluster, http, cur = {}, None, None, None
    for d, args in chartlib.conf_lines(conf):
        if d == "listener":
            cur = int(args[0])
            listeners[cur] = {"protocol": "mqtt", "tls": False}
        elif d == "protocol":
            listeners[cur]["protocol"] = args[0]
        elif d == "certfile":
            listeners[cur]["tls"] = True
        elif d == "cluster_listener":
            cluster = int(args[0])
        elif d == "http_listener":
            http = int(args[0])
    return listeners, cluster, http


def conf_value(conf, directive):
    vals = [a for d, a in chartlib.conf_lines(conf) if d == directive]
    assert len(vals) <= 1, f"{directive} given twice"
    return vals[0] if vals else None


# ---- every scenario ------------------------------------------------------------------------

REQUIRED = {
    "Deployment": [("spec", "selector", "matchLabels"), ("spec", "template", "metadata", "labels"),
                   ("spec", "template", "spec", "containers")],
    "StatefulSet": [("spec", "selector", "matchLabels"), ("spec", "serviceName"),
                    ("spec", "template", "spec", "containers")],
    "Service": [("spec", "ports"), ("spec", "selector")],
    "ConfigMap": [("data",)],
    "Secret": [("data",)],
    "ServiceAccount": [],
    "PodDisruptionBudget": [("spec", "selector", "matchLabels")],
    "HorizontalPodAutoscaler": [("spec", "scaleTargetRef", "name"), ("spec", "maxReplicas"),
                                ("spec", "metrics")],
    "NetworkPolicy": [("spec", "podSelector", "matchLabels"), ("spec", "policyTypes")],
    "ServiceMonitor": [("spec", "selector", "matchLabels"), ("spec", "endpoints")],
    "Certificate": [("spec", "secretName"), ("spec", "issuerRef", "name"), ("spec", "dnsNames")],
    "Pod": [("spec", "containers")],
}
API_VERSIONS = {
    "Deployment": "apps/v1", "StatefulSet": "apps/v1", "Service": "v1", "ConfigMap": "v1",
    "Secret": "v1", "ServiceAccount": "v1", "Pod": "v1", "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2", "NetworkPolicy": "networking.k8s.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1", "Certificate": "cert-manager.io/v1",
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dig(doc, path):
    cur = doc
    for p in path:
        assert isinstance(cur, dict) and p in cur, f"missing {'.'.join(path)}"
        cur = cur[p]
    return cur


def test_documents_are_valid_kubernetes_objects(scenario):
    name, docs, text = scenario
    assert docs, "nothing rendered"
    seen = set()
    for d in docs:
        assert isinstance(d, dict), d
        kind = d.get("kind")
        assert kind in REQUIRED, f"unexpected kind {kind}"
        assert d.get("apiVersion") == API_VERSIONS[kind], (kind, d.get("apiVersion"))
        meta = d["metadata"]
        assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        assert meta["namespace"] == SCENARIO_RENDER_ARGS.get(name, {}).get("namespace", "default")
        key = (kind, meta["name"])
        assert key not in seen, f"{key} rendered twice"
        seen.add(key)
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", key
        assert all(isinstance(v, str) and len(v) <= 63 for v in labels.values()), labels
        for path in REQUIRED[kind]:
            assert dig(d, path) not in (None, "", [], {}), f"{key}: empty {'.'.join(path)}"
        if kind in ("Deployment", "StatefulSet", "Pod"):
            for c in pod_spec(d)["containers"] + pod_spec(d).get("initContainers", []):
                assert c.get("name") and c.get("image"), c
        if kind == "Service":
            for p in d["spec"]["ports"]:
                assert p["name"] and 1 <= p["port"] <= 65535, p
        if kind == "Secret":
            for v in d["data"].values():
                assert re.fullmatch(r"[A-Za-z0-9+/=]*", v), "data must be base64"
    # Every source file is named like helm's output.
    sources = {s for s, _ in chartlib.split_sources(text)}
    assert all(s and s.startswith("shoal/templates/") for s in sources), sources


def test_selectors_pick_the_right_pods(scenario):
    name, docs, _ = scenario
    dep = one(docs, "Deployment")
    assert matches(dep["spec"]["selector"], pod_labels(dep))
    for sts in find(docs, "StatefulSet"):
        assert matches(sts["spec"]["selector"], pod_labels(sts))
    # Selectors of the Deployment and the Redis StatefulSet never overlap.
    for w in workloads(docs):
        assert selected_workloads(docs, w["spec"]["selector"]) == [w], w["metadata"]["name"]

    svcs = {s["metadata"]["name"]: s for s in find(docs, "Service")}
    for s in svcs.values():
        sel = selected_workloads(docs, s["spec"]["selector"])
        assert len(sel) == 1, f"service {s['metadata']['name']} selects {len(sel)} workloads"
    full = dep["metadata"]["name"]
    assert selected_workloads(docs, svcs[full]["spec"]["selector"]) == [dep]
    headless = svcs[f"{full}-headless"]
    assert selected_workloads(docs, headless["spec"]["selector"]) == [dep]

    for pdb in find(docs, "PodDisruptionBudget"):
        assert selected_workloads(docs, pdb["spec"]["selector"]) == [dep]
        assert pdb["spec"]["maxUnavailable"] == 1
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", full)
        assert "replicas" not in dep["spec"], "the HPA owns the replica count"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if not find(docs, "HorizontalPodAutoscaler"):
        assert dep["spec"]["replicas"] == SCENARIOS[name].get("replicaCount", 3)
    for sm in find(docs, "ServiceMonitor"):
        picked = [s for s in svcs.values()
                  if matches(sm["spec"]["selector"], s["metadata"]["labels"])]
        assert picked == [headless], [s["metadata"]["name"] for s in picked]
        port_names = {p["name"] for p in headless["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in port_names and ep["path"] == "/metrics"
        assert sm["spec"]["namespaceSelector"]["matchNames"] == [dep["metadata"]["namespace"]]
    for np in find(docs, "NetworkPolicy"):
        targets = selected_workloads(docs, np["spec"]["podSelector"])
        assert len(targets) == 1
        for rule in np["spec"]["ingress"]:
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert selected_workloads(docs, peer["podSelector"]) == [dep]
    # Topology rules spread the broker pods themselves.
    spec = pod_spec(dep)
    for term in spec.get("affinity", {}).get("podAntiAffinity", {}).get(
            "preferredDuringSchedulingIgnoredDuringExecution", []):
        assert selected_workloads(docs, term["podAffinityTerm"]["labelSelector"]) == [dep]
    for term in spec.get("affinity", {}).get("podAntiAffinity", {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution", []):
        assert selected_workloads(docs, term["labelSelector"]) == [dep]
    for tsc in spec.get("topologySpreadConstraints", []):
        assert selected_workloads(docs, tsc["labelSelector"]) == [dep]


def test_ports_agree_everywhere(scenario):
    name, docs, _ = scenario
    dep = one(docs, "Deployment")
    full = dep["metadata"]["name"]
    conf = chartlib.shoal_conf(docs)
    listeners, cluster_port, http_port = conf_listeners(conf)
    cports = container_ports(dep)

    # Container ports are exactly shoal.conf's listeners, named by what they serve.
    assert sorted(cports.values()) == sorted(list(listeners) + [cluster_port, http_port])
    assert cports["cluster"] == cluster_port and cports["http"] == http_port
    kinds = {"mqtt": ("mqtt", False), "mqtts": ("mqtt", True), "ws": ("websockets", False),
             "wss": ("websockets", True)}
    for pname in CLIENT_PORT_NAMES:
        if pname in cports:
            lst = listeners[cports[pname]]
            assert (lst["protocol"], lst["tls"]) == kinds[pname], (pname, lst)
    served = {(v["protocol"], v["tls"]) for v in listeners.values()}
    assert {p for p in cports if p in CLIENT_PORT_NAMES} == {
        p for p, k in kinds.items() if k in served}

    # Services reach named container ports, on the same numbers.
    for svc in find(docs, "Service"):
        target = selected_workloads(docs, svc["spec"]["selector"])[0]
        tports = container_ports(target)
        for p in svc["spec"]["ports"]:
            tp = p["targetPort"]
            assert tp in tports if isinstance(tp, str) else tp in tports.values(), (svc, p)
            assert p["port"] == (tports[tp] if isinstance(tp, str) else tp)
            assert p["name"] == tp or isinstance(tp, int)
    client = one(docs, "Service", full)
    assert {p["name"] for p in client["spec"]["ports"]} == {
        p for p in cports if p in CLIENT_PORT_NAMES}
    headless = one(docs, "Service", f"{full}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"] for p in headless["spec"]["ports"]} == {"cluster", "http"}

    # Probes: named ports that exist, on the http listener, with shoal's endpoints.
    c = shoal_container(docs)
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and cports[get["port"]] == http_port, (probe, get)
    for sts in find(docs, "StatefulSet"):
        for rc in pod_spec(sts)["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                port = rc[probe].get("tcpSocket", {}).get("port")
                assert port is None or port in container_ports(sts)

    # NetworkPolicy: client ports open, cluster port only from the brokers, http as asked.
    nps = {n["metadata"]["name"]: n for n in find(docs, "NetworkPolicy")}
    if SCENARIOS[name].get("networkPolicy", {}).get("enabled", True):
        np = nps[full]
        rules = {}
        for rule in np["spec"]["ingress"]:
            for p in rule["ports"]:
                rules[p["port"]] = rule.get("from")
        assert set(rules) == set(cports.values())
        for pname in CLIENT_PORT_NAMES:
            if pname in cports:
                assert rules[cports[pname]] is None, f"{pname} must be open to all"
        peers = rules[cluster_port]
        assert peers and all(selected_workloads(docs, p["podSelector"]) == [dep] for p in peers)
        want_from = SCENARIOS[name].get("networkPolicy", {}).get("metricsFrom") or None
        assert rules[http_port] == want_from
        if find(docs, "StatefulSet"):
            rnp = nps[f"{full}-redis"]
            redis = one(docs, "StatefulSet")
            assert rnp["spec"]["ingress"][0]["ports"][0]["port"] == container_ports(redis)["redis"]
            assert selected_workloads(docs, rnp["spec"]["podSelector"]) == [redis]
    else:
        assert not nps

    # shoal.conf names the headless Service for discovery, and the Redis Service as store.
    ns = dep["metadata"]["namespace"]
    assert conf_value(conf, "cluster_dns") == [f"{full}-headless.{ns}.svc.cluster.local"]
    store = conf_value(conf, "store")
    if find(docs, "StatefulSet"):
        rsvc = one(docs, "Service", f"{full}-redis")
        rport = rsvc["spec"]["ports"][0]["port"]
        assert store == [f"redis://{full}-redis.{ns}.svc.cluster.local:{rport}"]
    elif SCENARIOS[name]["externalRedis"].get("url"):
        assert store == [SCENARIOS[name]["externalRedis"]["url"]]
    else:
        assert store is None, "a store URL from a Secret must stay out of the ConfigMap"

    # The helm test pod talks to these very ports and names.
    pod = one(docs, "Pod")
    env = {e["name"]: e.get("value") for e in pod_spec(pod)["containers"][0]["env"]}
    assert env["PEERS"] == f"{full}-headless.{ns}.svc.cluster.local"
    assert env["SERVICE"] == f"{full}.{ns}.svc.cluster.local"
    if "mqtt" in cports:
        assert (env["PORT"], env["MQTT_TLS"]) == (str(cports["mqtt"]), "")
    else:
        assert (env["PORT"], env["MQTT_TLS"]) == (str(cports["mqtts"]), "1")


def test_pod_security_and_lifecycle(scenario):
    name, docs, _ = scenario
    dep = one(docs, "Deployment")
    spec = pod_spec(dep)
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == UID and psc["fsGroup"] == UID
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for c in spec["containers"] + spec["initContainers"] + pod_spec(one(docs, "Pod"))["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert sc["runAsUser"] == UID and sc["runAsNonRoot"] is True
    for sts in find(docs, "StatefulSet"):
        rsc = pod_spec(sts)["securityContext"]
        assert rsc["runAsNonRoot"] is True and rsc["runAsUser"] != 0
        for c in pod_spec(sts)["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert "--appendonly" in c["command"]
            assert c["command"][c["command"].index("--appendonly") + 1] == "yes"
        want_pvc = SCENARIOS[name].get("redis", {}).get("persistence", {}).get("enabled", True)
        assert bool(sts["spec"].get("volumeClaimTemplates")) == want_pvc

    # Drain: SIGTERM comes after the preStop sleep and the node has 20 s to hand over.
    c = shoal_container(docs)
    grace = spec["terminationGracePeriodSeconds"]
    pre = c["lifecycle"]["preStop"]
    kube = SCENARIO_RENDER_ARGS.get(name, {}).get("kube_version", "v1.29.0")
    if kube >= "v1.30":
        sleep = pre["sleep"]["seconds"]
    else:
        assert pre["exec"]["command"][0] == "sleep"
        sleep = int(pre["exec"]["command"][1])
    assert grace >= sleep + 20, (grace, sleep)
    # Rolling: a new pod must be Ready (joined) before an old one goes.
    ru = dep["spec"]["strategy"]["rollingUpdate"]
    assert ru["maxUnavailable"] == 0 and ru["maxSurge"] >= 1
    # Config changes roll the pods.
    cm = one(docs, "ConfigMap")
    assert re.fullmatch(r"[0-9a-f]{64}", dep["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"])
    assert cm["metadata"]["name"] in [v["configMap"]["name"] for v in spec["volumes"]
                                      if "configMap" in v]
    # Secrets and ConfigMaps are mounted, read-only, never as environment variables.
    for m in c["volumeMounts"]:
        assert m.get("readOnly") is True, m
    for e in c.get("env", []):
        assert "secretKeyRef" not in e.get("valueFrom", {}), e
    # Anti-affinity by host is at least preferred by default.
    aff = spec.get("affinity", {}).get("podAntiAffinity", {})
    assert aff, "nodes should spread over hosts"
    for term in aff.get("preferredDuringSchedulingIgnoredDuringExecution", []):
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_mounted_secrets_exist(scenario):
    name, docs, _ = scenario
    spec = pod_spec(one(docs, "Deployment"))
    cert_secrets = {c["spec"]["secretName"] for c in find(docs, "Certificate")}
    existing = set()
    for part in ("tls", "auth", "cluster", "externalRedis"):
        stack = [SCENARIOS[name].get(part, {})]
        while stack:
            cur = stack.pop()
            for k, v in cur.items():
                if isinstance(v, dict):
                    stack.append(v)
                elif k == "existingSecret" and v:
                    existing.add(v)
    for v in spec["volumes"]:
        if "secret" in v:
            sname = v["secret"]["secretName"]
            rendered_secret = find(docs, "Secret", sname)
            assert rendered_secret or sname in cert_secrets or sname in existing, sname
            for item in v["secret"].get("items", []):
                if rendered_secret:
                    assert item["key"] in rendered_secret[0]["data"], (sname, item)
    for c in spec["initContainers"]:
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] in existing


def test_shoal_accepts_the_rendered_config(scenario, tmp_path):
    """shoal.conf, with the files the pod mounts and after the init step, passes shoal -t."""
    name, docs, _ = scenario
    conf = chartlib.materialize(docs, tmp_path, pod_ip="10.42.0.7")
    rc, out = chartlib.shoal_check(SHOAL_BIN, conf)
    assert rc == 0, f"shoal -t failed for {name}:\n{out}\n---\n{conf.read_text()}"
    assert "config ok" in out
    # The init step advertised the pod's own address on the cluster port.
    full = one(docs, "Deployment")["metadata"]["name"]
    inc = Path(str(tmp_path) + conf_value(chartlib.shoal_conf(docs), "include_dir")[0])
    lines = "".join(f.read_text() for f in sorted(inc.glob("*.conf")))
    _, cluster_port, _ = conf_listeners(chartlib.shoal_conf(docs))
    assert f"cluster_advertise 10.42.0.7:{cluster_port}\n" in lines, (full, lines)
    if SCENARIOS[name].get("externalRedis", {}).get("existingSecret"):
        assert re.search(r"^store redis://", lines, re.M), lines


def test_yamllint_is_clean(scenario, tmp_path):
    name, _, text = scenario
    f = tmp_path / f"{name}.yaml"
    f.write_text(text)
    r = subprocess.run(["yamllint", "-f", "parsable", "-c", str(YAMLLINT_CONF), str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- single checks ---------------------------------------------------------------------------

def test_default_is_a_three_node_cluster_with_bundled_redis():
    docs = chartlib.render()
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    conf = chartlib.shoal_conf(docs)
    assert conf_value(conf, "cluster_listener") and conf_value(conf, "cluster_dns")
    assert conf_value(conf, "allow_anonymous") == ["true"]
    assert conf_value(conf, "log_dest") == ["stdout"]
    assert conf_value(conf, "http_listener") == ["8080"]
    assert conf_value(conf, "include_dir") == ["/run/shoal/conf.d"]
    assert conf_value(conf, "cluster_secret_file") == ["/run/secrets/shoal/cluster/secret"]
    # include_dir comes last: included lines are global ones and must not follow a listener.
    assert chartlib.conf_lines(conf)[-1][0] == "include_dir"
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert not find(docs, "Certificate") and not find(docs, "HorizontalPodAutoscaler")
    assert not find(docs, "ServiceMonitor")
    assert find(docs, "NetworkPolicy") and find(docs, "PodDisruptionBudget")
    secret = one(docs, "Secret", "shoal-cluster")
    assert len(chartlib.secret_data(docs, "shoal-cluster")["secret"]) >= 32, secret


def test_tls_lines_follow_the_switches():
    docs = chartlib.render({"tls.enabled": True, "tls.existingSecret": "x",
                            "tls.useIdentityAsUsername": True})
    conf = chartlib.shoal_conf(docs)
    assert "listener 8883\n" in conf
    assert "certfile /run/secrets/shoal/tls/tls.crt\n" in conf
    assert "cafile /run/secrets/shoal/tls/ca.crt\n" in conf
    assert "use_identity_as_username true\n" in conf
    docs = chartlib.render({"tls.enabled": True, "tls.existingSecret": "x"})
    assert "cafile" not in chartlib.shoal_conf(docs), "no client CA unless clients are checked"
    cert = one(chartlib.render({"tls.enabled": True, "tls.certManager.enabled": True,
                                "tls.certManager.issuerRef.name": "ca"}), "Certificate")
    assert "shoal.default.svc.cluster.local" in cert["spec"]["dnsNames"]
    assert cert["spec"]["issuerRef"] == {"name": "ca", "kind": "Issuer", "group": "cert-manager.io"}


def test_set_overrides_and_config_map_values():
    docs = chartlib.render(["replicaCount=4", "config.max_queued_messages=1000000",
                            "podAnnotations.example\\.org/x=y", "logging.types={error,debug}"])
    conf = chartlib.shoal_conf(docs)
    assert "max_queued_messages 1000000\n" in conf, "integers print whole, never as 1e+06"
    assert "log_type error\nlog_type debug\n" in conf
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 4
    assert dep["spec"]["template"]["metadata"]["annotations"]["example.org/x"] == "y"


def test_config_change_rolls_the_pods():
    def checksum(docs):
        return one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"]
    a, b = chartlib.render(), chartlib.render({"config.max_inflight_messages": 30})
    c = chartlib.render({"replicaCount": 5})
    assert checksum(a) != checksum(b)
    assert checksum(a) == checksum(c), "only the configuration moves the checksum"
    # It is the hash of the ConfigMap template's output, as helm's include | sha256sum gives.
    text = [chunk for src, chunk in chartlib.split_sources(chartlib.render_text())
            if src == "shoal/templates/configmap.yaml"][0]
    body = text.split("\n", 1)[1]
    assert hashlib.sha256(body.encode()).hexdigest() == checksum(a)


@pytest.mark.parametrize("sets,message", [
    ({"tls.enabled": True}, "tls.enabled needs a certificate"),
    ({"tls.enabled": True, "tls.existingSecret": "a", "tls.certManager.enabled": True},
     "exclude each other"),
    ({"tls.enabled": True, "tls.certManager.enabled": True}, "issuerRef.name"),
    ({"websocket.secure.enabled": True}, "websocket.secure.enabled needs"),
    ({"redis.enabled": False}, "keep redis.enabled, or set externalRedis"),
    ({"externalRedis.url": "redis://r:6379"}, "only with redis.enabled=false"),
    ({"mqtt.enabled": False}, "no client listener"),
    ({"http.port": 1883}, "two listeners share a port"),
    ({"auth.passwordFile.content": "x", "auth.passwordFile.existingSecret": "y"}, "not both"),
])
def test_bad_combinations_fail_with_a_message(sets, message):
    with pytest.raises(RenderError) as e:
        chartlib.render(sets)
    assert message in str(e.value)


@pytest.mark.parametrize("sets,message", [
    (["replicaCout=3"], "additional property \"replicaCout\" is not allowed"),
    (["tls.enabeld=true"], "tls: additional property \"enabeld\" is not allowed"),
    (["redis.persistence.sise=1Gi"], "additional property \"sise\""),
    (["replicaCount=three"], "replicaCount: invalid type: expected integer, given string"),
    (["mqtt.port=70000"], "mqtt.port: must be <= 65535"),
    (["tls.enabled=yes"], "tls.enabled: invalid type: expected boolean"),
    (["podAntiAffinity=sometimes"], "podAntiAffinity: value sometimes must be one of"),
    (["service.type=Ingress"], "service.type"),
    (["externalRedis.url=http://r"], "does not match pattern"),
    (["config.max queued=1"], "config.max queued"),
])
def test_schema_rejects_typos_and_wrong_types(sets, message):
    with pytest.raises(RenderError) as e:
        chartlib.render(sets)
    assert message in str(e.value), str(e.value)


def test_schema_checks_every_values_key_and_defaults_pass():
    """Every key of values.yaml is described by the schema, down to the leaves the chart
    reads, so additionalProperties: false really catches typos."""
    schema = json.loads((chartlib.CHART / "values.schema.json").read_text())
    values = yaml.safe_load((chartlib.CHART / "values.yaml").read_text())

    def walk(vals, node, path):
        while "$ref" in node:
            target = schema
            for part in node["$ref"].split("/")[1:]:
                target = target[part]
            node = target
        if isinstance(vals, dict) and node.get("properties") is not None:
            assert node.get("additionalProperties") is False, path
            for k, v in vals.items():
                assert k in node["properties"], f"{path}.{k} missing from the schema"
                walk(v, node["properties"][k], f"{path}.{k}")

    walk(values, schema, "values")
    chartlib.render()  # the defaults validate


def test_notes_tell_how_to_connect():
    notes = chartlib.render_text(notes=True)
    assert "port-forward service/shoal 1883" in notes
    assert "shoal.default.svc.cluster.local:1883" in notes
    assert "WARNING: anonymous clients are allowed" in notes
    notes = chartlib.render_text({"tls.enabled": True, "tls.existingSecret": "t",
                                  "websocket.enabled": True, "auth.allowAnonymous": False,
                                  "terminationGracePeriodSeconds": 10}, notes=True)
    assert "MQTT over TLS   shoal.default.svc.cluster.local:8883" in notes
    assert "ws://shoal.default.svc.cluster.local:8083/mqtt" in notes
    assert "anonymous" not in notes
    assert "terminationGracePeriodSeconds (10) is shorter" in notes


def test_strict_mode_catches_a_misspelt_value_in_a_template(tmp_path):
    """The renderer's --strict (used by every render here) fails on a missing key, so a
    template typo cannot silently render an empty string."""
    chart = tmp_path / "shoal"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: shoal\nversion: 0.0.1\n")
    (chart / "values.yaml").write_text("a: {b: 1}\n")
    (chart / "templates" / "x.yaml").write_text("v: {{ .Values.a.c }}\n")
    r = subprocess.run([str(chartlib.renderer()), str(chart), "--strict"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "map has no entry for key" in r.stderr
    r = subprocess.run([str(chartlib.renderer()), str(chart)], capture_output=True, text=True)
    assert r.returncode == 0 and "v: \n" in r.stdout


def test_renderer_behaves_like_helm_template(tmp_path):
    """The functions and objects the renderer provides, on a chart of its own."""
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "files").mkdir()
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: \"4.5\"\n")
    (chart / "values.yaml").write_text(
        "greeting: hello\nmsg: '{{ .Values.greeting }} world'\nlist: [b, a]\n"
        "nested: {x: 1, v: {z: true}}\n")
    (chart / "files" / "note.txt").write_text("from a file")
    (chart / "templates" / "_parts.tpl").write_text(
        '{{- define "demo.part" -}}part of {{ .Chart.Name }}{{- end }}\nnot output\n')
    (chart / "templates" / "a.yaml").write_text("""\
kind: A
release: {{ .Release.Name }}/{{ .Release.Namespace }}/{{ .Release.Service -}}
  /{{ .Release.IsInstall }}
chart: {{ .Chart.Name }}-{{ .Chart.Version }}-{{ .Chart.AppVersion }}
template: {{ .Template.Name }}
tpl: {{ tpl .Values.msg . }}
include: {{ include "demo.part" . | upper }}
required: {{ required "needed" .Values.greeting }}
json: {{ .Values.list | toJson }}
roundtrip: {{ (fromYaml (toYaml .Values.nested)).v.z }}
lookup: {{ len (lookup "v1" "Secret" "ns" "x") }}
file: {{ .Files.Get "files/note.txt" }}
kube: {{ .Capabilities.KubeVersion.Version }} {{ .Capabilities.APIVersions.Has "autoscaling/v2" }}
nested:
  {{- toYaml .Values.nested | nindent 2 }}
---
---
kind: B
""")
    (chart / "templates" / "empty.yaml").write_text("{{- if false }}kind: C{{ end }}\n")
    r = subprocess.run([str(chartlib.renderer()), str(chart), "--name", "rel", "-n", "ns",
                        "--set", "nested.v.w=7,list={c}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    parts = chartlib.split_sources(r.stdout)
    assert [s for s, _ in parts] == ["demo/templates/a.yaml", "demo/templates/a.yaml"]
    a = yaml.safe_load(parts[0][1])
    assert a["release"] == "rel/ns/Helm/true"
    assert a["chart"] == "demo-1.2.3-4.5"
    assert a["template"] == "demo/templates/a.yaml"
    assert a["tpl"] == "hello world"
    assert a["include"] == "PART OF DEMO"
    assert a["required"] == "hello"
    assert a["json"] == ["c"]
    assert a["roundtrip"] is True and a["lookup"] == 0 and a["file"] == "from a file"
    assert a["kube"] == "v1.29.0 true"
    assert a["nested"] == {"x": 1, "v": {"w": 7, "z": True}}
    assert yaml.safe_load(parts[1][1]) == {"kind": "B"}
    # required fails with its message; env is not available to charts, as in helm.
    (chart / "templates" / "a.yaml").write_text(
        'x: {{ required "greeting is needed" .Values.none }}\n')
    r = subprocess.run([str(chartlib.renderer()), str(chart)], capture_output=True, text=True)
    assert r.returncode == 1 and "greeting is needed" in r.stderr
    (chart / "templates" / "a.yaml").write_text('x: {{ env "HOME" }}\n')
    r = subprocess.run([str(chartlib.renderer()), str(chart)], capture_output=True, text=True)
    assert r.returncode == 1 and "function \"env\" not defined" in r.stderr


def test_init_step_brackets_ipv6_addresses(tmp_path):
    docs = chartlib.render()
    conf = chartlib.materialize(docs, tmp_path, pod_ip="fd00:10::7")
    text = (tmp_path / "run/shoal/conf.d/10-advertise.conf").read_text()
    assert text == "cluster_advertise [fd00:10::7]:17990\n"
    rc, out = chartlib.shoal_check(SHOAL_BIN, conf)
    assert rc == 0, out


# ---- the helm test pod against a real node ------------------------------------------------------

def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _run_test_pod_script(tmp_path, docs, conf_lines):
    """Runs the chart's helm test pod script (with the environment the pod would get from
    docs) against one node on loopback started with conf_lines; both "nodes" and "service"
    are that node."""
    port = _free_port()
    conf = tmp_path / "node.conf"
    conf.write_text(f"listener {port} 127.0.0.1\n" + conf_lines)
    log = open(tmp_path / "node.log", "w")
    node = subprocess.Popen([str(SHOAL_BIN), "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert node.poll() is None and time.time() < deadline, "node did not start"
                time.sleep(0.05)
        container = pod_spec(one(docs, "Pod"))["containers"][0]
        script = container["command"]
        assert script[:2] == ["/bin/sh", "-ec"]
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "shoal-bench").symlink_to(SHOAL_BENCH)
        env = {}
        for e in container["env"]:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                env[e["name"]] = chartlib.secret_data(docs, ref["name"])[ref["key"]].decode()
            else:
                env[e["name"]] = e["value"]
        env.update(PEERS="127.0.0.1", SERVICE="127.0.0.1", PORT=str(port),
                   HOSTNAME="helm-test-pod", TMPDIR=str(tmp_path), PATH=f"{bindir}:/usr/bin:/bin")
        return subprocess.run(["/bin/sh", "-ec", script[2]], env=env, capture_output=True,
                              text=True, timeout=90)
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            rc = node.wait(timeout=25)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
            rc = "no exit on SIGTERM"
        log.close()
        text = (tmp_path / "node.log").read_text()
        assert rc == 0 and not any(m in text for m in SANITIZER_MARKS), f"node: {rc}\n{text}"


def test_helm_test_pod_passes_against_a_node(tmp_path):
    r = _run_test_pod_script(tmp_path, chartlib.render(), "allow_anonymous true\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "received 10 of 10" in r.stdout, r.stdout


def test_helm_test_pod_logs_in_with_the_chart_user(tmp_path, values_dir):
    """With passwords and an ACL, the test pod uses test.username/password from its Secret,
    and the chart's example ACL lets that user use the test's topics."""
    docs, _ = rendered("password-and-acl", values_dir)
    files = chartlib.secret_data(docs, "shoal-auth")
    (tmp_path / "passwd").write_bytes(files["passwd"])
    (tmp_path / "acl").write_bytes(files["acl"])
    conf = (f"allow_anonymous false\npassword_file {tmp_path}/passwd\n"
            f"acl_file {tmp_path}/acl\n")
    r = _run_test_pod_script(tmp_path, docs, conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "received 10 of 10" in r.stdout, r.stdout


def test_helm_test_pod_fails_when_the_node_refuses_it(tmp_path):
    r = _run_test_pod_script(tmp_path, chartlib.render(), "allow_anonymous false\n")
    assert r.returncode != 0, r.stdout + r.stderr


# ---- Dockerfile ---------------------------------------------------------------------------------

def _dockerfile():
    """[(instruction, argument text)] with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in (SRC / "Dockerfile").read_text().splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            instr, _, rest = cur.strip().partition(" ")
            out.append((instr.upper(), rest.strip()))
            cur = ""
    return out


def _makefile_build_pkgs():
    text = (SRC / "Makefile").read_text().replace("\\\n", " ")
    m = re.search(r"^BUILD_PKGS\s*:?=\s*(.*)$", text, re.M)
    return set(m.group(1).split())


def test_dockerfile_structure():
    instrs = _dockerfile()
    froms = [a for i, a in instrs if i == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for f in froms:
        assert re.match(r"debian:12(-slim)?(@sha256:[0-9a-f]{64})?( AS \w+)?$", f, re.I), f
    for i, a in instrs:
        assert i != "ADD" or not re.search(r"https?://", a), "no ADD of a URL"
        assert not (i == "RUN" and re.search(r"\b(curl|wget)\b", a)), "no downloads"
    # Stages: everything after the last FROM is the runtime image.
    last = max(k for k, (i, _) in enumerate(instrs) if i == "FROM")
    build, runtime = instrs[:last], instrs[last:]
    build_run = " ".join(a for i, a in build if i == "RUN")
    for pkg in _makefile_build_pkgs():
        assert re.search(rf"(?<![\w.-]){re.escape(pkg)}(?![\w.-])", build_run), \
            f"build stage lacks {pkg} (Makefile BUILD_PKGS)"
    assert "-DCMAKE_BUILD_TYPE=Release" in build_run
    runtime_run = " ".join(a for i, a in runtime if i == "RUN")
    assert not re.search(r"[\w.+-]+-dev\b", runtime_run), "runtime stage installs -dev packages"
    for lib in ("libuv1", "libssl3", "libhiredis0.14", "libprotobuf-c1", "libwslay1",
                "libhttp-parser2.9", "libargon2-1"):
        assert lib in runtime_run, lib
    copies = " ".join(a for i, a in runtime if i == "COPY")
    assert "--from=build" in copies
    assert "shoal-bench" in build_run and "shoal" in build_run
    users = [a for i, a in runtime if i == "USER"]
    assert users, "runtime stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    assert int(uid) == UID == yaml.safe_load((chartlib.CHART / "values.yaml").read_text())[
        "podSecurityContext"]["runAsUser"]
    assert f"--uid {UID}" in runtime_run
    exposed = {int(p) for i, a in runtime if i == "EXPOSE" for p in a.split()}
    values = yaml.safe_load((chartlib.CHART / "values.yaml").read_text())
    for port in (values["mqtt"]["port"], values["tls"]["port"], values["websocket"]["port"],
                 values["websocket"]["secure"]["port"], values["cluster"]["port"],
                 values["http"]["port"]):
        assert port in exposed, port
    entry = [a for i, a in runtime if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == [
        "/usr/local/bin/shoal", "-c", "/etc/shoal/shoal.conf"]
    # The chart's image: repository shoal, tag the chart's appVersion.
    chart = yaml.safe_load((chartlib.CHART / "Chart.yaml").read_text())
    assert values["image"]["repository"] == "shoal" and values["image"]["tag"] == ""
    dep = one(chartlib.render(), "Deployment")
    assert pod_spec(dep)["containers"][0]["image"] == f"shoal:{chart['appVersion']}"
    ignore = (SRC / ".dockerignore").read_text().split()
    assert ".git" in ignore and "build" in ignore
