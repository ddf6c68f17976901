"""MQTT 5 features: topic aliases both ways, message expiry, no-local, subscription
identifiers, user properties, request/response, payload format and content type, Maximum
Packet Size in both directions, shared subscriptions and SUBACK/UNSUBACK reason codes."""

import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

import helpers
import rawmqtt as R


def _subprops(sid):
    return helpers.props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sid)


def _v5pub(clients, broker, **props):
    c = clients.raw(broker, version=5)
    assert c.connect(helpers.unique("p5"), version=5, props=props or None).rc == 0
    return c


# --- topic aliases --------------------------------------------------------------------------

def test_topic_alias_client_to_server(shared_broker, clients):
    sub = clients.v5(shared_broker)
    t = "m5/alias/" + sub.client_id
    sub.subscribe(t, qos=1)
    c = _v5pub(clients, shared_broker)
    c.publish(t, b"first", qos=1, pid=1, props={R.P_TOPIC_ALIAS: 1})
    assert c.expect(R.PUBACK).pid == 1
    c.publish("", b"second", qos=1, pid=2, props={R.P_TOPIC_ALIAS: 1})
    assert c.expect(R.PUBACK).pid == 2
    got = sub.expect_messages(2)
    assert [(m.topic, m.payload) for m in got] == [(t, b"first"), (t, b"second")]
    # re-map the alias to another topic
    t2 = t + "/2"
    sub.subscribe(t2, qos=1)
    c.publish(t2, b"third", qos=1, pid=3, props={R.P_TOPIC_ALIAS: 1})
    c.publish("", b"fourth", qos=1, pid=4, props={R.P_TOPIC_ALIAS: 1})
    got = sub.expect_messages(2)
    assert [(m.topic, m.payload) for m in got] == [(t2, b"third"), (t2, b"fourth")]


def test_topic_alias_not_leaked_to_subscribers(shared_broker, clients):
    sub = clients.raw_connected(shared_broker, version=5)
    t = "m5/alias-nl/" + helpers.unique()
    sub.subscribe([(t, 0)])
    c = _v5pub(clients, shared_broker)
    c.publish(t, b"x", props={R.P_TOPIC_ALIAS: 3})
    p = sub.expect(R.PUBLISH)
    assert p.topic == t and R.P_TOPIC_ALIAS not in p.props  # subscriber set no maximum


def test_topic_alias_above_maximum_disconnects(broker_factory, clients):
    b = broker_factory(["max_topic_alias 5"])
    c = clients.raw(b, version=5)
    ack = c.connect(helpers.unique(), version=5)
    assert ack.props.get(R.P_TOPIC_ALIAS_MAXIMUM) == 5
    c.publish("m5/a", b"ok", props={R.P_TOPIC_ALIAS: 5})
    assert c.is_open()
    c.publish("m5/a", b"bad", props={R.P_TOPIC_ALIAS: 6})
    seen = c.wait_closed(3)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    assert discs and discs[0].rc == 0x94, "expected DISCONNECT 0x94, saw %r" % seen


def test_topic_alias_zero_disconnects(shared_broker, clients):
    c = _v5pub(clients, shared_broker)
    c.publish("m5/a0", b"bad", props={R.P_TOPIC_ALIAS: 0})
    seen = c.wait_closed(3)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    # 0x94 Topic Alias invalid; mosquitto says 0x81 (malformed)
    assert discs and discs[0].rc in (0x94, 0x82, 0x81), seen


def test_unknown_topic_alias_with_empty_topic_is_protocol_error(shared_broker, clients):
    c = _v5pub(clients, shared_broker)
    c.publish("", b"bad", props={R.P_TOPIC_ALIAS: 2})
    seen = c.wait_closed(3)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    assert discs and discs[0].rc == 0x82, seen


def test_server_to_client_topic_alias_correct(shared_broker, clients):
    """The broker may use aliases when the client allows them; whatever it does, every
    PUBLISH must resolve to the right topic and aliases must stay within the maximum."""
    sub = clients.raw(shared_broker, version=5)
    assert sub.connect(helpers.unique("tam"), version=5,
                       props={R.P_TOPIC_ALIAS_MAXIMUM: 2}).rc == 0
    base = "m5/sta/" + helpers.unique()
    sub.subscribe([(base + "/#", 0)])
    pub = clients.v5(shared_broker)
    topics = [base + "/%d" % (i % 3) for i in range(12)]
    for i, t in enumerate(topics):
        pub.publish(t, b"%d" % i, qos=0)
    aliases = {}
    for i, t in enumerate(topics):
        p = sub.expect(R.PUBLISH)
        a = p.props.get(R.P_TOPIC_ALIAS)
        topic = p.topic
        if a is not None:
            assert 1 <= a <= 2, "alias %d above the client's Topic Alias Maximum" % a
            if topic:
                aliases[a] = topic
            else:
                assert a in aliases, "empty topic with an alias never defined"
                topic = aliases[a]
        assert topic, "empty topic without an alias"
        assert (topic, p.payload) == (t, b"%d" % i)


def test_topic_aliases_both_ways_on_one_connection(shared_broker, clients):
    """A client that sets aliases and receives them keeps two separate tables: what it
    maps does not change what the broker's aliases mean, and the other way round."""
    c = clients.raw(shared_broker, version=5)
    assert c.connect(helpers.unique("tab"), version=5,
                     props={R.P_TOPIC_ALIAS_MAXIMUM: 2}).rc == 0
    base = "m5/both/" + helpers.unique()
    c.subscribe([(base + "/#", 0)])
    seen = {}
    for i in range(8):
        t = "%s/%d" % (base, i % 3)
        # The client maps alias 1 (its own side) to a fresh topic each time, and uses it.
        c.publish(t, b"set%d" % i, props={R.P_TOPIC_ALIAS: 1})
        c.publish("", b"use%d" % i, props={R.P_TOPIC_ALIAS: 1})
        for want in (b"set%d" % i, b"use%d" % i):
            p = c.expect(R.PUBLISH)
            a = p.props.get(R.P_TOPIC_ALIAS)
            topic = p.topic
            if a is not None:
                if topic:
                    seen[a] = topic
                else:
                    topic = seen[a]
            assert (topic, p.payload) == (t, want)


def test_no_server_alias_without_client_topic_alias_maximum(shared_broker, clients):
    """paho 1.6 cannot resolve inbound aliases (the raw test above checks them), and it sets
    no Topic Alias Maximum: the broker must then always send the full topic."""
    sub = clients.v5(shared_broker)
    base = "m5/sta-paho/" + sub.client_id
    sub.subscribe(base + "/#", qos=1)
    pub = clients.v5(shared_broker)
    for i in range(6):
        pub.publish(base + "/x", b"%d" % i, qos=1)
    got = sub.expect_messages(6)
    assert [m.topic for m in got] == [base + "/x"] * 6


# --- message expiry -------------------------------------------------------------------------

def test_message_expiry_in_offline_queue(broker, clients):
    cid = helpers.unique("exp")
    t = "m5/exp/" + cid
    s = clients.v5(broker, cid, clean=False,
                   properties=helpers.connect_props(SessionExpiryInterval=300))
    s.subscribe(t, qos=1)
    s.disconnect()
    pub = clients.v5(broker)
    pub.publish(t, b"short", qos=1, properties=helpers.publish_props(MessageExpiryInterval=1))
    pub.publish(t, b"long", qos=1, properties=helpers.publish_props(MessageExpiryInterval=60))
    pub.publish(t, b"forever", qos=1)
    time.sleep(2.5)
    s2 = clients.v5(broker, cid, clean=False,
                    properties=helpers.connect_props(SessionExpiryInterval=300))
    assert s2.session_present
    got = s2.expect_messages(2)
    s2.expect_no_message(0.5)
    assert [m.payload for m in got] == [b"long", b"forever"]
    remaining = helpers.get_prop(got[0].properties, "MessageExpiryInterval")
    assert remaining is not None and 50 <= remaining <= 58, \
        "expiry should be decremented by the ~2.5s wait, got %r" % remaining
    assert helpers.get_prop(got[1].properties, "MessageExpiryInterval") is None


def test_message_expiry_forwarded_live(shared_broker, clients):
    sub = clients.v5(shared_broker)
    t = "m5/exp-live/" + sub.client_id
    sub.subscribe(t, qos=1)
    pub = clients.v5(shared_broker)
    pub.publish(t, b"x", qos=1, properties=helpers.publish_props(MessageExpiryInterval=30))
    m = sub.expect_message()
    assert 29 <= helpers.get_prop(m.properties, "MessageExpiryInterval") <= 30


def test_retained_message_expires(shared_broker, clients):
    pub = clients.v5(shared_broker)
    t = "m5/exp-ret/" + pub.client_id
    pub.publish(t, b"r", qos=1, retain=True,
                properties=helpers.publish_props(MessageExpiryInterval=1))
    time.sleep(2.2)
    sub = clients.v5(shared_broker)
    sub.subscribe(t, qos=1)
    sub.expect_no_message(0.5)


# --- subscription options and identifiers ---------------------------------------------------

def test_no_local(shared_broker, clients):
    a = clients.v5(shared_broker)
    other = clients.v5(shared_broker)
    t = "m5/nolocal/" + a.client_id
    a.subscribe(t, options=SubscribeOptions(qos=1, noLocal=True))
    other.subscribe(t, qos=1)
    a.publish(t, b"mine", qos=1)
    assert other.expect_message().payload == b"mine"
    a.expect_no_message(0.5)
    other.publish(t, b"theirs", qos=1)
    assert a.expect_message().payload == b"theirs"


def test_subscription_identifiers(shared_broker, clients):
    sub = clients.v5(shared_broker)
    base = "m5/sid/" + sub.client_id
    sub.subscribe(base + "/#", qos=1,
                  properties=_subprops(7))
    sub.subscribe(base + "/a", qos=1,
                  properties=_subprops(9))
    sub.subscribe(base + "/none", qos=1)
    pub = clients.v5(shared_broker)
    pub.publish(base + "/b", b"b", qos=1)
    m = sub.expect_message()
    assert helpers.get_prop(m.properties, "SubscriptionIdentifier") == [7]
    pub.publish(base + "/a", b"a", qos=1)
    got = [sub.expect_message()] + sub.drain(0.5)
    ids = sorted(i for m in got for i in helpers.get_prop(m.properties,
                                                          "SubscriptionIdentifier", []))
    assert ids == [7, 9], [(m.payload, m.properties) for m in got]
    pub.publish(base + "/none", b"n", qos=1)
    got = [sub.expect_message()] + sub.drain(0.3)
    # matched by base/# (7) and base/none (no identifier)
    ids = sorted(i for m in got for i in helpers.get_prop(m.properties,
                                                          "SubscriptionIdentifier", []))
    assert ids == [7]


def test_subscription_identifier_on_retained(shared_broker, clients):
    pub = clients.v5(shared_broker)
    t = "m5/sid-ret/" + pub.client_id
    pub.publish(t, b"r", qos=1, retain=True)
    sub = clients.v5(shared_broker)
    sub.subscribe(t, qos=1, properties=_subprops(42))
    m = sub.expect_message()
    assert helpers.get_prop(m.properties, "SubscriptionIdentifier") == [42]
    pub.publish(t, b"", qos=1, retain=True)


# --- properties forwarded -------------------------------------------------------------------

def test_user_properties_forwarded_in_order(shared_broker, clients):
    sub = clients.v5(shared_broker)
    t = "m5/up/" + sub.client_id
    sub.subscribe(t, qos=1)
    pub = clients.v5(shared_broker)
    ups = [("a", "1"), ("b", "2"), ("a", "3"), ("ü", "€")]
    pub.publish(t, b"x", qos=1, properties=helpers.publish_props(UserProperty=ups))
    m = sub.expect_message()
    assert helpers.get_prop(m.properties, "UserProperty") == ups


def test_user_properties_to_v311_subscriber_dropped_cleanly(shared_broker, clients):
    sub = clients.v3(shared_broker)
    t = "m5/up3/" + sub.client_id
    sub.subscribe(t, qos=1)
    pub = clients.v5(shared_broker)
    pub.publish(t, b"plain", qos=1,
                properties=helpers.publish_props(UserProperty=[("k", "v")],
                                                 ContentType="text/plain"))
    assert sub.expect_message().payload == b"plain"


def test_request_response_properties(shared_broker, clients):
    responder = clients.v5(shared_broker)
    req_t = "m5/req/" + responder.client_id
    responder.subscribe(req_t, qos=1)
    requester = clients.v5(shared_broker)
    resp_t = "m5/resp/" + requester.client_id
    requester.subscribe(resp_t, qos=1)
    requester.publish(req_t, b"question", qos=1, properties=helpers.publish_props(
        ResponseTopic=resp_t, CorrelationData=b"\x00\x01corr"))
    m = responder.expect_message()
    assert helpers.get_prop(m.properties, "ResponseTopic") == resp_t
    assert helpers.get_prop(m.properties, "CorrelationData") == b"\x00\x01corr"
    responder.publish(helpers.get_prop(m.properties, "ResponseTopic"), b"answer", qos=1,
                      properties=helpers.publish_props(
                          CorrelationData=helpers.get_prop(m.properties, "CorrelationData")))
    r = requester.expect_message()
    assert r.payload == b"answer"
    assert helpers.get_prop(r.properties, "CorrelationData") == b"\x00\x01corr"


def test_payload_format_and_content_type(shared_broker, clients):
    sub = clients.v5(shared_broker)
    t = "m5/pfi/" + sub.client_id
    sub.subscribe(t, qos=1)
    pub = clients.v5(shared_broker)
    pub.publish(t, "text ✓".encode(), qos=1, properties=helpers.publish_props(
        PayloadFormatIndicator=1, ContentType="application/json; charset=utf-8"))
    m = sub.expect_message()
    assert helpers.get_prop(m.properties, "PayloadFormatIndicator") == 1
    assert helpers.get_prop(m.properties, "ContentType") == "application/json; charset=utf-8"


def test_request_response_information(shared_broker, clients):
    """Request Response Information may be answered or not; the CONNACK must stay valid."""
    c = clients.raw(shared_broker, version=5)
    ack = c.connect(helpers.unique(), version=5, props={R.P_REQUEST_RESPONSE_INFO: 1})
    assert ack.rc == 0
    info = ack.props.get(R.P_RESPONSE_INFO)
    assert info is None or isinstance(info, str)


# --- maximum packet size --------------------------------------------------------------------

def test_client_maximum_packet_size_skips_large_messages(shared_broker, clients):
    sub = clients.raw(shared_broker, version=5)
    assert sub.connect(helpers.unique("mps"), version=5,
                       props={R.P_MAXIMUM_PACKET_SIZE: 200}).rc == 0
    t = "m5/mps/" + helpers.unique()
    sub.subscribe([(t, 1)])
    pub = clients.v5(shared_broker)
    pub.publish(t, b"s" * 50, qos=1)
    pub.publish(t, b"L" * 500, qos=1)
    pub.publish(t, b"end", qos=1)
    got = []
    for _ in range(2):
        p = sub.expect(R.PUBLISH)
        assert len(p.body) + 2 <= 200
        got.append(p.payload)
        sub.send(R.puback(p.pid, version=5))
    assert got == [b"s" * 50, b"end"]
    assert sub.try_recv(0.3) is None
    assert sub.is_open()


def test_broker_max_packet_size(broker_factory, clients):
    b = broker_factory(["max_packet_size 1000"])
    c = clients.raw(b, version=5)
    ack = c.connect(helpers.unique(), version=5)
    assert ack.rc == 0
    assert ack.props.get(R.P_MAXIMUM_PACKET_SIZE) == 1000
    c.publish("m5/big", b"x" * 900, qos=1, pid=1)
    assert c.expect(R.PUBACK).pid == 1
    c.publish("m5/big", b"x" * 2000, qos=1, pid=2)
    seen = c.wait_closed(3)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    assert discs and discs[0].rc == 0x95, "expected DISCONNECT 0x95, saw %r" % seen
    # v3.1.1: just closed
    c3 = clients.raw(b, version=4)
    assert c3.connect(helpers.unique(), version=4).rc == 0
    c3.publish("m5/big", b"x" * 2000)
    c3.wait_closed(3)
    assert clients.v3(b).connack_rc == 0


# --- shared subscriptions -------------------------------------------------------------------

@pytest.mark.parametrize("qos", [0, 1])
def test_shared_subscription_distributes(shared_broker, clients, version, qos):
    g = "g" + helpers.unique().replace("-", "")
    t = "m5/share/" + g
    members = [clients.paho(shared_broker, version=version) for _ in range(2)]
    for m in members:
        m.subscribe("$share/%s/%s" % (g, t), qos=qos)
    normal = clients.paho(shared_broker, version=version)
    normal.subscribe(t, qos=qos)
    pub = clients.v5(shared_broker)
    n = 20
    for i in range(n):
        pub.publish(t, b"%d" % i, qos=qos)
    assert sorted(int(m.payload) for m in normal.expect_messages(n)) == list(range(n))
    time.sleep(0.3)
    got = [sorted(int(x.payload) for x in m.drain(0.3)) for m in members]
    assert sorted(got[0] + got[1]) == list(range(n)), "each message to exactly one member"
    assert got[0] and got[1], "both members should get some messages: %r" % got


def test_shared_subscription_topic_is_original(shared_broker, clients):
    g = "g" + helpers.unique().replace("-", "")
    m = clients.v5(shared_broker)
    m.subscribe("$share/%s/m5/shtopic/+" % g, qos=1)
    clients.v5(shared_broker).publish("m5/shtopic/x", b"1", qos=1)
    assert m.expect_message().topic == "m5/shtopic/x"


def test_shared_subscription_unsubscribe(shared_broker, clients):
    g = "g" + helpers.unique().replace("-", "")
    t = "m5/shunsub/" + g
    a, b = clients.v5(shared_broker), clients.v5(shared_broker)
    for c in (a, b):
        c.subscribe("$share/%s/%s" % (g, t), qos=1)
    a.unsubscribe("$share/%s/%s" % (g, t))
    pub = clients.v5(shared_broker)
    for i in range(4):
        pub.publish(t, b"%d" % i, qos=1)
    assert len(b.expect_messages(4)) == 4
    a.expect_no_message(0.3)


# --- reason codes ---------------------------------------------------------------------------

def test_suback_invalid_filter(shared_broker, clients):
    """An invalid filter: SUBACK with a failure code (0x8F), or DISCONNECT and close."""
    c = clients.raw_connected(shared_broker, version=5)
    c.send(R.subscribe(3, [("m5/ok", 1), ("m5/#/bad", 1)], version=5))
    p = c.recv(3)
    if p.type == R.SUBACK:
        assert p.pid == 3
        assert p.codes[0] == 1 and p.codes[1] in (0x8F, 0x80, 0x83), p
        assert c.is_open()
    else:
        assert p.type == R.DISCONNECT and p.rc in (0x81, 0x82, 0x8F), p
        c.wait_closed(3)
    assert clients.v5(shared_broker).connack_rc == 0


@pytest.mark.parametrize("flt", ["a/b#", "a+/b", "#/a", "$share/g", "$share//t",
                                 "$share/g+/t"])
def test_invalid_filters_rejected(shared_broker, clients, flt):
    c = clients.raw_connected(shared_broker, version=5)
    c.send(R.subscribe(4, [(flt, 0)], version=5))
    try:
        p = c.recv(3)
    except R.Closed:
        return
    if p.type == R.SUBACK:
        assert p.codes[0] >= 0x80, "filter %r accepted: %r" % (flt, p)
    else:
        assert p.type == R.DISCONNECT and p.rc >= 0x80, p


def test_unsuback_reason_codes(shared_broker, clients):
    c = clients.raw_connected(shared_broker, version=5)
    t = "m5/unsuback/" + helpers.unique()
    c.subscribe([(t, 0)])
    c.send(R.unsubscribe(9, [t, t + "/never"], version=5))
    u = c.expect(R.UNSUBACK)
    assert u.pid == 9
    assert u.codes[0] == 0x00
    assert u.codes[1] in (0x00, 0x11)


def test_suback_granted_qos_v5(shared_broker, clients):
    c = clients.raw_connected(shared_broker, version=5)
    base = "m5/suback/" + helpers.unique()
    s = c.subscribe([(base + "/0", 0), (base + "/1", 1), (base + "/2", 2)], pid=77)
    assert s.pid == 77 and s.codes == [0, 1, 2]


def test_puback_no_matching_subscribers(shared_broker, clients):
    c = clients.raw_connected(shared_broker, version=5)
    c.publish("m5/nobody/" + helpers.unique(), b"x", qos=1, pid=5)
    a = c.expect(R.PUBACK)
    assert a.pid == 5 and a.rc in (0x00, 0x10)


def test_retained_not_sent_to_shared_subscription(shared_broker, clients):
    pub = clients.v5(shared_broker)
    t = "m5/shret/" + pub.client_id
    pub.publish(t, b"r", qos=1, retain=True)
    g = "g" + helpers.unique().replace("-", "")
    m = clients.v5(shared_broker)
    m.subscribe("$share/%s/%s" % (g, t), qos=1)
    m.expect_no_message(0.5)
    pub.publish(t, b"", qos=1, retain=True)
