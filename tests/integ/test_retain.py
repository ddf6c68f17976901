"""Retained messages: set, replace, clear, wildcard replay, flags, v5 Retain Handling and
Retain As Published, and retain_available false."""

from paho.mqtt.subscribeoptions import SubscribeOptions

import helpers
import rawmqtt as R


def _ns(c):
    return "ret/" + c.client_id


def test_retained_delivered_on_subscribe(shared_broker, clients, version):
    pub = clients.paho(shared_broker, version=version)
    t = _ns(pub) + "/a"
    pub.publish(t, b"kept", qos=1, retain=True)
    sub = clients.paho(shared_broker, version=version)
    sub.subscribe(t, qos=1)
    m = sub.expect_message()
    assert (m.topic, m.payload, bool(m.retain), m.qos) == (t, b"kept", True, 1)
    sub.expect_no_message(0.3)


def test_retained_survives_publisher_disconnect(shared_broker, clients, version):
    pub = clients.paho(shared_broker, version=version)
    t = _ns(pub) + "/gone"
    pub.publish(t, b"still here", qos=1, retain=True)
    pub.disconnect()
    sub = clients.paho(shared_broker, version=version)
    sub.subscribe(t, qos=0)
    m = sub.expect_message()
    assert m.payload == b"still here" and m.retain and m.qos == 0


def test_retained_replace(shared_broker, clients, version):
    pub = clients.paho(shared_broker, version=version)
    t = _ns(pub) + "/r"
    pub.publish(t, b"one", qos=1, retain=True)
    pub.publish(t, b"two", qos=1, retain=True)
    sub = clients.paho(shared_broker, version=version)
    sub.subscribe(t, qos=1)
    assert sub.expect_message().payload == b"two"
    sub.expect_no_message(0.3)


def test_retained_clear_with_empty_payload(shared_broker, clients, version):
    pub = clients.paho(shared_broker, version=version)
    t = _ns(pub) + "/c"
    live = clients.paho(shared_broker, version=version)
    live.subscribe(t, qos=1)
    pub.publish(t, b"x", qos=1, retain=True)
    assert live.expect_message().payload == b"x"
    pub.publish(t, b"", qos=1, retain=True)
    # the empty retained publish is still forwarded to current subscribers
    m = live.expect_message()
    assert m.payload == b""
    sub = clients.paho(shared_broker, version=version)
    sub.subscribe(t, qos=1)
    sub.expect_no_message(0.5)


def test_retained_wildcard_replay(shared_broker, clients, version):
    pub = clients.paho(shared_broker, version=version)
    base = _ns(pub)
    topics = [base + "/a/1", base + "/a/2", base + "/b/1", base + "/a/1/deep"]
    for i, t in enumerate(topics):
        pub.publish(t, b"%d" % i, qos=1, retain=True)
    s1 = clients.paho(shared_broker, version=version)
    s1.subscribe(base + "/a/+", qos=1)
    got = sorted((m.topic, m.payload) for m in s1.expect_messages(2))
    assert got == [(topics[0], b"0"), (topics[1], b"1")]
    s1.expect_no_message(0.3)
    s2 = clients.paho(shared_broker, version=version)
    s2.subscribe(base + "/#", qos=1)
    msgs = s2.expect_messages(4)
    assert sorted(m.topic for m in msgs) == sorted(topics)
    assert all(m.retain for m in msgs)
    s2.expect_no_message(0.3)


def test_live_delivery_has_retain_flag_clear_v311(shared_broker, clients):
    sub = clients.v3(shared_broker)
    t = _ns(sub) + "/live"
    sub.subscribe(t, qos=1)
    pub = clients.v3(shared_broker)
    pub.publish(t, b"x", qos=1, retain=True)
    m = sub.expect_message()
    assert m.payload == b"x" and not m.retain


def test_retained_qos_downgraded(shared_broker, clients, version):
    pub = clients.paho(shared_broker, version=version)
    t = _ns(pub) + "/q"
    pub.publish(t, b"q2", qos=2, retain=True)
    sub = clients.paho(shared_broker, version=version)
    sub.subscribe(t, qos=1)
    m = sub.expect_message()
    assert (m.payload, m.qos, bool(m.retain)) == (b"q2", 1, True)


def test_retained_qos0_then_resubscribe_gets_it_again(shared_broker, clients, version):
    pub = clients.paho(shared_broker, version=version)
    t = _ns(pub) + "/again"
    pub.publish(t, b"r", qos=0, retain=True)
    sub = clients.paho(shared_broker, version=version)
    sub.subscribe(t, qos=0)
    assert sub.expect_message().payload == b"r"
    sub.subscribe(t, qos=0)  # re-subscribe: retained sent again (v3; v5 retain handling 0)
    assert sub.expect_message().payload == b"r"


def test_v5_retain_handling(shared_broker, clients):
    pub = clients.v5(shared_broker)
    t = _ns(pub) + "/rh"
    pub.publish(t, b"r", qos=1, retain=True)

    s0 = clients.v5(shared_broker)
    s0.subscribe(t, options=SubscribeOptions(qos=1, retainHandling=0))
    assert s0.expect_message().payload == b"r"
    s0.subscribe(t, options=SubscribeOptions(qos=1, retainHandling=0))
    assert s0.expect_message().payload == b"r"

    s1 = clients.v5(shared_broker)
    s1.subscribe(t, options=SubscribeOptions(qos=1, retainHandling=1))
    assert s1.expect_message().payload == b"r"
    s1.subscribe(t, options=SubscribeOptions(qos=1, retainHandling=1))
    s1.expect_no_message(0.5)  # subscription already existed

    s2 = clients.v5(shared_broker)
    s2.subscribe(t, options=SubscribeOptions(qos=1, retainHandling=2))
    s2.expect_no_message(0.5)
    # live messages still flow with retain handling 2
    pub.publish(t, b"live", qos=1)
    assert s2.expect_message().payload == b"live"


def test_v5_retain_as_published(shared_broker, clients):
    pub = clients.v5(shared_broker)
    t = _ns(pub) + "/rap"
    rap = clients.v5(shared_broker)
    rap.subscribe(t, options=SubscribeOptions(qos=1, retainAsPublished=True))
    norap = clients.v5(shared_broker)
    norap.subscribe(t, options=SubscribeOptions(qos=1, retainAsPublished=False))
    pub.publish(t, b"x", qos=1, retain=True)
    assert rap.expect_message().retain
    assert not norap.expect_message().retain
    pub.publish(t, b"y", qos=1, retain=False)
    assert not rap.expect_message().retain
    # clean up the retained message
    pub.publish(t, b"", qos=1, retain=True)


def test_retain_available_false(broker_factory, clients):
    b = broker_factory(["retain_available false"])
    c = clients.raw(b, version=5)
    ack = c.connect(helpers.unique(), version=5)
    assert ack.rc == 0
    assert ack.props.get(R.P_RETAIN_AVAILABLE) == 0, ack
    # non-retained publishes are fine
    c.publish("ret/unavail", b"ok", qos=1, pid=1)
    assert c.expect(R.PUBACK).pid == 1
    sub = clients.v5(b)
    sub.subscribe("ret/unavail", qos=1)
    c.publish("ret/unavail", b"bad", qos=1, pid=2, retain=True)
    seen = c.wait_closed(3)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    assert discs and discs[0].rc == 0x9A, "expected DISCONNECT 0x9A, saw %r" % seen
    sub.expect_no_message(0.3)
    # nothing was retained
    s2 = clients.v5(b)
    s2.subscribe("ret/unavail", qos=1)
    s2.expect_no_message(0.5)


def test_retained_many_topics(shared_broker, clients):
    pub = clients.v3(shared_broker)
    base = _ns(pub)
    for i in range(100):
        pub.publish("%s/%d" % (base, i), b"%d" % i, qos=1, retain=True)
    sub = clients.v3(shared_broker)
    sub.subscribe(base + "/+", qos=1)
    got = sub.expect_messages(100, timeout=10)
    assert sorted(int(m.payload) for m in got) == list(range(100))
