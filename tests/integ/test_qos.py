"""QoS 1 and 2 packet flows, byte by byte: PUBACK/PUBREC/PUBREL/PUBCOMP in both directions,
duplicate QoS 2 publishes, and the inflight window (v5 Receive Maximum, max_inflight_messages)."""

import pytest

import helpers
import rawmqtt as R

LEVELS = pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])


@LEVELS
def test_qos1_publish_gets_puback(shared_broker, clients, level):
    c = clients.raw_connected(shared_broker, version=level)
    c.publish("qos/1/" + helpers.unique(), b"x", qos=1, pid=0x1234)
    ack = c.expect(R.PUBACK)
    assert ack.pid == 0x1234
    if level == 5:
        assert ack.rc in (0x00, 0x10)  # success or "no matching subscribers"
    else:
        assert len(ack.body) == 2


@LEVELS
def test_qos2_publish_flow(shared_broker, clients, level):
    sub = clients.v5(shared_broker) if level == 5 else clients.v3(shared_broker)
    t = "qos/2/" + sub.client_id
    sub.subscribe(t, qos=2)
    c = clients.raw_connected(shared_broker, version=level)
    c.publish(t, b"two", qos=2, pid=7)
    rec = c.expect(R.PUBREC)
    assert rec.pid == 7 and rec.rc in (0x00, 0x10)
    c.send(R.pubrel(7, version=level))
    comp = c.expect(R.PUBCOMP)
    assert comp.pid == 7 and comp.rc == 0
    m = sub.expect_message()
    assert (m.payload, m.qos) == (b"two", 2)
    sub.expect_no_message(0.3)


@LEVELS
def test_qos2_duplicate_publish_delivered_once(shared_broker, clients, level):
    sub = clients.v3(shared_broker)
    t = "qos/dup/" + sub.client_id
    sub.subscribe(t, qos=2)
    c = clients.raw_connected(shared_broker, version=level)
    c.publish(t, b"once", qos=2, pid=42)
    assert c.expect(R.PUBREC).pid == 42
    # The PUBREC "got lost": the client resends the PUBLISH with DUP set.
    c.publish(t, b"once", qos=2, pid=42, dup=True)
    assert c.expect(R.PUBREC).pid == 42
    c.send(R.pubrel(42, version=level))
    assert c.expect(R.PUBCOMP).pid == 42
    assert sub.expect_message().payload == b"once"
    sub.expect_no_message(0.5)
    # The packet id is free again: a new message with the same id is a new message.
    c.publish(t, b"again", qos=2, pid=42)
    assert c.expect(R.PUBREC).pid == 42
    c.send(R.pubrel(42, version=level))
    assert c.expect(R.PUBCOMP).pid == 42
    assert sub.expect_message().payload == b"again"


@LEVELS
def test_pubrel_for_unknown_id_gets_pubcomp(shared_broker, clients, level):
    c = clients.raw_connected(shared_broker, version=level)
    c.send(R.pubrel(999, version=level))
    comp = c.expect(R.PUBCOMP)
    assert comp.pid == 999
    if level == 5:
        assert comp.rc in (0x00, 0x92)  # 0x92 Packet Identifier not found
    assert c.is_open()


@LEVELS
def test_qos1_delivery_to_raw_subscriber(shared_broker, clients, level):
    sub = clients.raw_connected(shared_broker, version=level)
    t = "qos/rx1/" + helpers.unique()
    assert sub.subscribe([(t, 1)]).codes == [1]
    pub = clients.v3(shared_broker)
    pub.publish(t, b"a", qos=1)
    p = sub.expect(R.PUBLISH)
    assert (p.topic, p.payload, p.qos, p.dup, p.retain) == (t, b"a", 1, False, False)
    assert p.pid and 1 <= p.pid <= 65535
    sub.send(R.puback(p.pid, version=level))
    assert sub.try_recv(0.5) is None  # no redelivery once acked


@LEVELS
def test_qos2_delivery_to_raw_subscriber(shared_broker, clients, level):
    sub = clients.raw_connected(shared_broker, version=level)
    t = "qos/rx2/" + helpers.unique()
    assert sub.subscribe([(t, 2)]).codes == [2]
    pub = clients.v3(shared_broker)
    pub.publish(t, b"b", qos=2)
    p = sub.expect(R.PUBLISH)
    assert (p.payload, p.qos) == (b"b", 2)
    sub.send(R.pubrec(p.pid, version=level))
    rel = sub.expect(R.PUBREL)
    assert rel.pid == p.pid and rel.flags == 0x02
    sub.send(R.pubcomp(p.pid, version=level))
    assert sub.try_recv(0.5) is None


def test_packet_ids_distinct_for_concurrent_inflight(shared_broker, clients):
    sub = clients.raw_connected(shared_broker, version=4)
    t = "qos/ids/" + helpers.unique()
    sub.subscribe([(t, 1)])
    pub = clients.v3(shared_broker)
    for i in range(10):
        pub.publish(t, b"%d" % i, qos=1)
    got = [sub.expect(R.PUBLISH) for _ in range(10)]
    assert [int(p.payload) for p in got] == list(range(10))
    assert len({p.pid for p in got}) == 10
    for p in got:
        sub.send(R.puback(p.pid))


def test_v5_receive_maximum_limits_inflight(shared_broker, clients):
    sub = clients.raw(shared_broker, version=5)
    ack = sub.connect(helpers.unique("rm"), version=5, props={R.P_RECEIVE_MAXIMUM: 2})
    assert ack.rc == 0
    t = "qos/rm/" + helpers.unique()
    sub.subscribe([(t, 1)])
    pub = clients.v3(shared_broker)
    for i in range(5):
        pub.publish(t, b"%d" % i, qos=1)
    first = [sub.expect(R.PUBLISH, 3) for _ in range(2)]
    assert [p.payload for p in first] == [b"0", b"1"]
    assert sub.try_recv(0.7) is None, "a third unacknowledged QoS 1 PUBLISH was sent"
    sub.send(R.puback(first[0].pid, version=5))
    third = sub.expect(R.PUBLISH, 3)
    assert third.payload == b"2"
    assert sub.try_recv(0.5) is None
    sub.send(R.puback(first[1].pid, version=5))
    sub.send(R.puback(third.pid, version=5))
    rest = [sub.expect(R.PUBLISH, 3) for _ in range(2)]
    assert [p.payload for p in rest] == [b"3", b"4"]


def test_v5_receive_maximum_applies_to_qos2(shared_broker, clients):
    sub = clients.raw(shared_broker, version=5)
    assert sub.connect(helpers.unique("rm2"), version=5,
                       props={R.P_RECEIVE_MAXIMUM: 1}).rc == 0
    t = "qos/rm2/" + helpers.unique()
    sub.subscribe([(t, 2)])
    pub = clients.v3(shared_broker)
    for i in range(3):
        pub.publish(t, b"%d" % i, qos=2)
    p0 = sub.expect(R.PUBLISH, 3)
    assert sub.try_recv(0.5) is None
    sub.send(R.pubrec(p0.pid, version=5))
    assert sub.expect(R.PUBREL).pid == p0.pid
    # still inflight until PUBCOMP
    assert sub.try_recv(0.5) is None
    sub.send(R.pubcomp(p0.pid, version=5))
    p1 = sub.expect(R.PUBLISH, 3)
    assert p1.payload == b"1"


def test_qos0_not_limited_by_receive_maximum(shared_broker, clients):
    sub = clients.raw(shared_broker, version=5)
    assert sub.connect(helpers.unique("rm0"), version=5,
                       props={R.P_RECEIVE_MAXIMUM: 1}).rc == 0
    t = "qos/rm0/" + helpers.unique()
    sub.subscribe([(t, 0)])
    pub = clients.v3(shared_broker)
    for i in range(5):
        pub.publish(t, b"%d" % i, qos=0)
    got = [sub.expect(R.PUBLISH, 3).payload for _ in range(5)]
    assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_max_inflight_messages_limits_v311(broker_factory, clients):
    b = broker_factory(["max_inflight_messages 2"])
    sub = clients.raw_connected(b, version=4)
    t = "qos/mif/" + helpers.unique()
    sub.subscribe([(t, 1)])
    pub = clients.v3(b)
    for i in range(4):
        pub.publish(t, b"%d" % i, qos=1)
    first = [sub.expect(R.PUBLISH, 3) for _ in range(2)]
    assert sub.try_recv(0.7) is None
    for p in first:
        sub.send(R.puback(p.pid))
    rest = [sub.expect(R.PUBLISH, 3) for _ in range(2)]
    assert [p.payload for p in first + rest] == [b"0", b"1", b"2", b"3"]


def test_v5_connack_receive_maximum_from_max_inflight(broker_factory, clients):
    b = broker_factory(["max_inflight_messages 3"])
    c = clients.raw(b, version=5)
    ack = c.connect(helpers.unique(), version=5)
    assert ack.props.get(R.P_RECEIVE_MAXIMUM) == 3


def test_qos2_message_not_delivered_twice_to_paho_when_pubrel_repeats(shared_broker,
                                                                      clients):
    sub = clients.v3(shared_broker)
    t = "qos/rel2/" + sub.client_id
    sub.subscribe(t, qos=2)
    c = clients.raw_connected(shared_broker, version=4)
    c.publish(t, b"m", qos=2, pid=5)
    c.expect(R.PUBREC)
    c.send(R.pubrel(5))
    c.expect(R.PUBCOMP)
    c.send(R.pubrel(5))
    c.expect(R.PUBCOMP)
    assert sub.expect_message().payload == b"m"
    sub.expect_no_message(0.5)
