"""Publish/subscribe: QoS grant and downgrade, wildcards, $-topics, unsubscribe, ordering,
fan-out and payload sizes. Runs with paho MQTTv311 and MQTTv5."""

import pytest

import helpers


def _pair(clients, broker, version):
    return clients.paho(broker, version=version), clients.paho(broker, version=version)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_subscribe_same_qos(shared_broker, clients, version, qos):
    sub, pub = _pair(clients, shared_broker, version)
    t = "ps/q%d/%s" % (qos, sub.client_id)
    assert sub.subscribe(t, qos=qos) == [qos]
    pub.publish(t, b"payload-%d" % qos, qos=qos)
    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos, bool(m.retain)) == (t, b"payload-%d" % qos, qos, False)
    sub.expect_no_message(0.3)


@pytest.mark.parametrize("sub_qos,pub_qos", [(0, 1), (0, 2), (1, 2), (2, 0), (2, 1), (1, 0)])
def test_delivery_qos_is_min_of_publish_and_subscription(shared_broker, clients, version,
                                                         sub_qos, pub_qos):
    sub, pub = _pair(clients, shared_broker, version)
    t = "ps/down/%s" % sub.client_id
    sub.subscribe(t, qos=sub_qos)
    pub.publish(t, b"x", qos=pub_qos)
    m = sub.expect_message()
    assert m.qos == min(sub_qos, pub_qos)


def test_resubscribe_replaces_qos(shared_broker, clients, version):
    sub, pub = _pair(clients, shared_broker, version)
    t = "ps/resub/%s" % sub.client_id
    sub.subscribe(t, qos=2)
    sub.subscribe(t, qos=0)
    pub.publish(t, b"x", qos=2)
    assert sub.expect_message().qos == 0
    sub.expect_no_message(0.3)  # one subscription, not two


def test_overlapping_subscriptions(shared_broker, clients, version):
    """Either one copy at the highest QoS, or one copy per matching subscription."""
    sub, pub = _pair(clients, shared_broker, version)
    base = "ps/ovl/%s" % sub.client_id
    sub.subscribe(base + "/#", qos=0)
    sub.subscribe(base + "/a", qos=1)
    pub.publish(base + "/a", b"x", qos=1)
    got = [sub.expect_message()] + sub.drain(0.5)
    assert 1 <= len(got) <= 2, got
    assert all(m.payload == b"x" for m in got)
    assert max(m.qos for m in got) == 1


MATCHES = [
    ("a/+/c", ["a/b/c", "a//c", "a/xyz/c"], ["a/b", "a/b/c/d", "a/c", "b/b/c"]),
    ("a/#", ["a", "a/b", "a/b/c", "a/"], ["ab", "b/a", "aa/b"]),
    ("+", ["x", "abc"], ["x/y", "/x"]),
    ("+/+", ["/", "x/y", "x/"], ["x", "x/y/z"]),
    ("/+", ["/x", "/"], ["x", "x/y"]),
    ("+/b/#", ["a/b", "a/b/c", "x/b/c/d"], ["a/c", "b"]),
    ("a/b", ["a/b"], ["a/b/", "a", "A/b", "a/b/c"]),
    ("x/#", ["x/€/ü", "x/with space"], ["y/€"]),
]


@pytest.mark.parametrize("flt,yes,no", MATCHES, ids=[m[0] for m in MATCHES])
def test_wildcard_matching(shared_broker, clients, version, flt, yes, no):
    sub, pub = _pair(clients, shared_broker, version)
    ns = "wc-%s" % sub.client_id  # a private namespace as a first level
    sentinel = "%s/sentinel" % ns

    # prefix the filter and topics with the namespace (the namespace is one level)
    sub.subscribe("%s/%s" % (ns, flt), qos=1)
    sub.subscribe(sentinel, qos=1)
    for t in yes + no:
        pub.publish("%s/%s" % (ns, t), t.encode(), qos=1)
    pub.publish(sentinel, b"end", qos=1)
    got = []
    while True:
        m = sub.expect_message()
        if m.topic == sentinel and m.payload == b"end":
            break
        got.append(m.topic)
    # with "a/#" style filters on the sentinel level, the sentinel may match flt too
    got = [t for t in got if t != sentinel]
    assert sorted(got) == sorted("%s/%s" % (ns, t) for t in yes)


def test_hash_alone_matches_everything_but_dollar_topics(shared_broker, clients, version):
    a, b = _pair(clients, shared_broker, version)
    pub = clients.paho(shared_broker, version=version)
    dollar = "$x%s/y" % a.client_id.replace("-", "")
    sentinel = "ps/dollar/" + a.client_id
    a.subscribe("#", qos=1)
    b.subscribe(dollar.split("/")[0] + "/#", qos=1)
    pub.publish(dollar, b"d", qos=1)
    pub.publish(sentinel, b"s", qos=1)
    m = a.expect_message(topic=sentinel)  # anything before the sentinel must not be $x...
    assert m.payload == b"s"
    assert b.expect_message().topic == dollar


def test_plus_first_level_does_not_match_dollar_topic(shared_broker, clients, version):
    a = clients.paho(shared_broker, version=version)
    pub = clients.paho(shared_broker, version=version)
    a.subscribe("+/pl-%s" % a.client_id, qos=1)
    a.subscribe("sentinel-%s" % a.client_id, qos=1)
    pub.publish("$SYSX/pl-%s" % a.client_id, b"d", qos=1)
    pub.publish("plain/pl-%s" % a.client_id, b"p", qos=1)
    pub.publish("sentinel-%s" % a.client_id, b"s", qos=1)
    got = [a.expect_message() for _ in range(2)]
    assert [m.payload for m in got] == [b"p", b"s"]


def test_unsubscribe_stops_delivery(shared_broker, clients, version):
    sub, pub = _pair(clients, shared_broker, version)
    t = "ps/unsub/%s" % sub.client_id
    other = t + "/other"
    sub.subscribe(t, qos=1)
    sub.subscribe(other, qos=1)
    pub.publish(t, b"1", qos=1)
    assert sub.expect_message().payload == b"1"
    sub.unsubscribe(t)
    pub.publish(t, b"2", qos=1)
    pub.publish(other, b"3", qos=1)
    m = sub.expect_message()
    assert (m.topic, m.payload) == (other, b"3")
    sub.expect_no_message(0.3)


def test_unsubscribe_unknown_filter_is_harmless(shared_broker, clients, version):
    c = clients.paho(shared_broker, version=version)
    c.unsubscribe("ps/never/subscribed/" + c.client_id)
    t = "ps/after/" + c.client_id
    c.subscribe(t)
    c.publish(t, b"ok")
    assert c.expect_message().payload == b"ok"


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_message_order_per_publisher(shared_broker, clients, version, qos):
    sub, pub = _pair(clients, shared_broker, version)
    t = "ps/order/%s" % sub.client_id
    sub.subscribe(t, qos=qos)
    infos = [pub.publish(t, b"%d" % i, qos=qos, wait=False) for i in range(200)]
    for i in infos:
        i.wait_for_publish(5)
    got = sub.expect_messages(200, timeout=10)
    assert [int(m.payload) for m in got] == list(range(200))


def test_fan_out_to_many_subscribers(shared_broker, clients, version):
    subs = [clients.paho(shared_broker, version=version) for _ in range(8)]
    t = "ps/fan/" + subs[0].client_id
    for s in subs:
        s.subscribe(t, qos=1)
    pub = clients.paho(shared_broker, version=version)
    pub.publish(t, b"all", qos=1)
    for s in subs:
        assert s.expect_message().payload == b"all"


def test_publisher_receives_own_message(shared_broker, clients, version):
    c = clients.paho(shared_broker, version=version)
    t = "ps/self/" + c.client_id
    c.subscribe(t, qos=1)
    c.publish(t, b"me", qos=1)
    assert c.expect_message().payload == b"me"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 300000])
def test_payload_sizes(shared_broker, clients, version, size):
    sub, pub = _pair(clients, shared_broker, version)
    t = "ps/size/%s" % sub.client_id
    sub.subscribe(t, qos=1)
    payload = bytes((i * 7) & 0xFF for i in range(size))
    pub.publish(t, payload, qos=1)
    m = sub.expect_message()
    assert m.payload == payload


def test_binary_payload_and_utf8_topic(shared_broker, clients, version):
    sub, pub = _pair(clients, shared_broker, version)
    t = "ps/ütf8/€/%s" % sub.client_id
    sub.subscribe(t, qos=1)
    payload = bytes(range(256))
    pub.publish(t, payload, qos=1)
    m = sub.expect_message()
    assert (m.topic, m.payload) == (t, payload)


def test_no_subscribers_qos1_still_acked(shared_broker, clients, version):
    pub = clients.paho(shared_broker, version=version)
    pub.publish("ps/nobody/" + pub.client_id, b"x", qos=1)
    pub.publish("ps/nobody/" + pub.client_id, b"x", qos=2)


def test_v3_and_v5_clients_interoperate(shared_broker, clients):
    s3 = clients.v3(shared_broker)
    s5 = clients.v5(shared_broker)
    t = "ps/mixed/" + s3.client_id
    s3.subscribe(t, qos=2)
    s5.subscribe(t, qos=2)
    p5 = clients.v5(shared_broker)
    p5.publish(t, b"from5", qos=2,
               properties=helpers.publish_props(UserProperty=[("k", "v")]))
    assert s3.expect_message().payload == b"from5"
    assert s5.expect_message().payload == b"from5"
    p3 = clients.v3(shared_broker)
    p3.publish(t, b"from3", qos=1)
    assert s3.expect_message().payload == b"from3"
    m = s5.expect_message()
    assert m.payload == b"from3" and m.qos == 1


def test_many_subscriptions_in_one_packet(shared_broker, clients):
    c = clients.v3(shared_broker)
    base = "ps/multi/" + c.client_id
    codes = c.subscribe([(base + "/a", 0), (base + "/b", 1), (base + "/c", 2)])
    assert codes == [0, 1, 2]
    c5 = clients.v5(shared_broker)
    codes5 = c5.subscribe([(base + "/a", 0), (base + "/b", 1), (base + "/c", 2)])
    assert codes5 == [0, 1, 2]
    p = clients.v3(shared_broker)
    for s in "abc":
        p.publish(base + "/" + s, s.encode(), qos=2)
    assert sorted(m.qos for m in c.expect_messages(3)) == [0, 1, 2]
    assert sorted(m.qos for m in c5.expect_messages(3)) == [0, 1, 2]
