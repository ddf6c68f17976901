"""$SYS topics with sys_interval 1."""

import re
import time

import pytest


WANTED = ["$SYS/broker/uptime", "$SYS/broker/clients/connected",
          "$SYS/broker/messages/received", "$SYS/broker/version"]


@pytest.fixture
def sys_broker(broker_factory):
    return broker_factory(["sys_interval 1"])


def _collect(c, wanted, timeout=4.0):
    seen = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (seen and all(w in seen for w in wanted)):
        for m in c.drain(0.1):
            seen[m.topic] = m.payload.decode("utf-8", "replace")
    return seen


def test_sys_topics_published(sys_broker, clients, version):
    c = clients.paho(sys_broker, version=version)
    c.subscribe("$SYS/#", qos=0)
    seen = _collect(c, WANTED)
    # the first values may be retained ones from before this client connected
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and seen.get("$SYS/broker/clients/connected") == "0":
        seen.update(_collect(c, WANTED, 0.5))
    missing = [w for w in WANTED if w not in seen]
    assert not missing, "missing %r; got %r" % (missing, sorted(seen))
    assert re.fullmatch(r"\d+( seconds)?", seen["$SYS/broker/uptime"]), seen
    assert int(seen["$SYS/broker/clients/connected"]) >= 1
    assert int(seen["$SYS/broker/messages/received"]) >= 0
    assert seen["$SYS/broker/version"].strip()


def test_sys_values_change(sys_broker, clients):
    c = clients.v3(sys_broker)
    c.subscribe("$SYS/broker/uptime", qos=0)
    c.subscribe("$SYS/broker/clients/connected", qos=0)
    first = _collect(c, WANTED[:2])
    up1 = int(first["$SYS/broker/uptime"].split()[0])
    n1 = int(first["$SYS/broker/clients/connected"])
    others = [clients.v3(sys_broker) for _ in range(3)]
    deadline = time.monotonic() + 5
    up2, n2 = up1, n1
    while time.monotonic() < deadline and not (up2 > up1 and n2 >= n1 + 3):
        for m in c.drain(0.1):
            if m.topic.endswith("uptime"):
                up2 = int(m.payload.split()[0])
            else:
                n2 = int(m.payload)
    assert up2 > up1, "uptime did not advance"
    assert n2 >= n1 + 3, "connected clients %d -> %d after 3 more connected" % (n1, n2)
    assert len(others) == 3


def test_messages_received_counts(sys_broker, clients):
    c = clients.v3(sys_broker)
    c.subscribe("$SYS/broker/messages/received", qos=0)
    v1 = int(_collect(c, ["$SYS/broker/messages/received"])["$SYS/broker/messages/received"])
    pub = clients.v3(sys_broker)
    for i in range(20):
        pub.publish("sys/count", b"x", qos=1)
    v2 = v1
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and v2 < v1 + 20:
        for m in c.drain(0.1):
            v2 = int(m.payload)
    assert v2 >= v1 + 20


def test_hash_does_not_match_sys(sys_broker, clients, version):
    c = clients.paho(sys_broker, version=version)
    c.subscribe("#", qos=0)
    c.publish("sys/sentinel", b"s")
    assert c.expect_message().topic == "sys/sentinel"
    for m in c.drain(2.2):  # two sys intervals
        assert not m.topic.startswith("$SYS"), m.topic


def test_plus_does_not_match_sys(sys_broker, clients):
    c = clients.v3(sys_broker)
    c.subscribe("+/broker/#", qos=0)
    for m in c.drain(2.2):
        assert not m.topic.startswith("$SYS"), m.topic


def test_clients_cannot_publish_to_sys(sys_broker, clients):
    c = clients.v3(sys_broker)
    c.subscribe("$SYS/broker/fake", qos=0)
    p = clients.v3(sys_broker)
    p.publish("$SYS/broker/fake", b"spoof", qos=1)
    c.expect_no_message(0.7)


def test_sys_disabled_by_default_interval_zero(broker_factory, clients):
    b = broker_factory(["sys_interval 0"])
    c = clients.v3(b)
    c.subscribe("$SYS/broker/uptime", qos=0)
    c.expect_no_message(1.5)
