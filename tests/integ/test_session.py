"""Sessions: resume with clean session 0 / clean start 0, queued messages, v5 Session Expiry,
persistent_client_expiration, max_queued_messages, takeover of a client id, and redelivery of
in-flight messages with DUP."""

import time

import pytest

import helpers
import rawmqtt as R
from helpers import V311, V5


def _persistent(clients, broker, version, cid, expiry=300, connect=True):
    if version == V5:
        return clients.v5(broker, cid, clean=False, connect=connect,
                          properties=helpers.connect_props(SessionExpiryInterval=expiry))
    return clients.v3(broker, cid, clean=False, connect=connect)


def test_session_resumed_with_queued_messages(broker, clients, version):
    cid = helpers.unique("sess")
    t = "sess/q/" + cid
    s = _persistent(clients, broker, version, cid)
    assert not s.session_present
    s.subscribe(t, qos=1)
    s.disconnect()
    pub = clients.v3(broker)
    for i in range(3):
        pub.publish(t, b"%d" % i, qos=1)
    s2 = _persistent(clients, broker, version, cid)
    assert s2.session_present
    got = s2.expect_messages(3)
    assert [m.payload for m in got] == [b"0", b"1", b"2"]
    assert all(m.qos == 1 for m in got)
    # the subscription is still there for live messages
    pub.publish(t, b"live", qos=1)
    assert s2.expect_message().payload == b"live"


def test_qos2_queued_offline(broker, clients, version):
    cid = helpers.unique("sess2")
    t = "sess/q2/" + cid
    s = _persistent(clients, broker, version, cid)
    s.subscribe(t, qos=2)
    s.disconnect()
    pub = clients.v3(broker)
    pub.publish(t, b"two", qos=2)
    s2 = _persistent(clients, broker, version, cid)
    m = s2.expect_message()
    assert (m.payload, m.qos) == (b"two", 2)


def test_qos0_not_queued_for_offline_session(broker, clients):
    """mosquitto's default (queue_qos0_messages false): QoS 0 is not kept for offline clients."""
    cid = helpers.unique("q0")
    t = "sess/q0/" + cid
    s = _persistent(clients, broker, V311, cid)
    s.subscribe(t, qos=0)
    s.disconnect()
    pub = clients.v3(broker)
    pub.publish(t, b"zero", qos=0)
    pub.publish(t, b"one", qos=1)  # downgraded to 0 by the subscription: not queued either
    s2 = _persistent(clients, broker, V311, cid)
    assert s2.session_present
    s2.expect_no_message(0.7)


def test_clean_session_discards_previous_session(broker, clients, version):
    cid = helpers.unique("clean")
    t = "sess/clean/" + cid
    s = _persistent(clients, broker, version, cid)
    s.subscribe(t, qos=1)
    s.disconnect()
    pub = clients.v3(broker)
    pub.publish(t, b"x", qos=1)
    if version == V5:
        c = clients.v5(broker, cid, clean=True)
    else:
        c = clients.v3(broker, cid, clean=True)
    assert not c.session_present
    c.expect_no_message(0.5)
    c.disconnect()
    # and the clean session left nothing behind
    s3 = _persistent(clients, broker, version, cid)
    assert not s3.session_present
    pub.publish(t, b"y", qos=1)
    s3.expect_no_message(0.5)


def test_v3_session_present_zero_on_first_connect(broker, clients):
    c = clients.raw(broker, version=4)
    ack = c.connect(helpers.unique(), version=4, clean=False)
    assert ack.rc == 0 and not ack.session_present


def test_v3_clean_session_connack_session_present_zero(broker, clients):
    cid = helpers.unique()
    a = clients.raw(broker, version=4)
    assert a.connect(cid, version=4, clean=False).rc == 0
    a.send(R.disconnect())
    a.wait_closed(3)
    b = clients.raw(broker, version=4)
    ack = b.connect(cid, version=4, clean=True)
    assert ack.rc == 0 and not ack.session_present


def test_v5_session_expiry_zero_discards_at_disconnect(broker, clients):
    cid = helpers.unique("se0")
    t = "sess/se0/" + cid
    s = clients.v5(broker, cid, clean=False,
                   properties=helpers.connect_props(SessionExpiryInterval=0))
    s.subscribe(t, qos=1)
    s.disconnect()
    clients.v3(broker).publish(t, b"x", qos=1)
    s2 = clients.v5(broker, cid, clean=False,
                    properties=helpers.connect_props(SessionExpiryInterval=60))
    assert not s2.session_present
    s2.expect_no_message(0.5)


def test_v5_session_expiry_interval(broker, clients):
    early, late = helpers.unique("se-e"), helpers.unique("se-l")
    for cid in (early, late):
        s = clients.v5(broker, cid, clean=False,
                       properties=helpers.connect_props(SessionExpiryInterval=2))
        s.subscribe("sess/se/" + cid, qos=1)
        s.disconnect()
    t0 = time.monotonic()
    clients.v3(broker).publish("sess/se/" + early, b"kept", qos=1)
    time.sleep(0.5)
    s = clients.v5(broker, early, clean=False,
                   properties=helpers.connect_props(SessionExpiryInterval=2))
    assert s.session_present
    assert s.expect_message().payload == b"kept"
    time.sleep(max(0.0, 4.0 - (time.monotonic() - t0)))
    s2 = clients.v5(broker, late, clean=False,
                    properties=helpers.connect_props(SessionExpiryInterval=2))
    assert not s2.session_present, "session should have expired after 2s"


def test_v5_session_expiry_set_on_disconnect(broker, clients):
    """A session opened with a long expiry is dropped when DISCONNECT sets expiry 0."""
    cid = helpers.unique("sed")
    c = clients.raw(broker, version=5)
    assert c.connect(cid, version=5, clean=False, props={R.P_SESSION_EXPIRY: 300}).rc == 0
    c.send(R.disconnect(0, props={R.P_SESSION_EXPIRY: 0}, version=5))
    c.wait_closed(3)
    c2 = clients.raw(broker, version=5)
    ack = c2.connect(cid, version=5, clean=False, props={R.P_SESSION_EXPIRY: 300})
    assert ack.rc == 0 and not ack.session_present


def test_v5_session_expiry_on_disconnect_when_connect_had_zero_is_protocol_error(broker,
                                                                                 clients):
    c = clients.raw(broker, version=5)
    assert c.connect(helpers.unique(), version=5, props={R.P_SESSION_EXPIRY: 0}).rc == 0
    c.send(R.disconnect(0, props={R.P_SESSION_EXPIRY: 30}, version=5))
    seen = c.wait_closed(3)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    assert discs and discs[0].rc == 0x82, seen


def test_persistent_client_expiration(broker_factory, clients):
    b = broker_factory(["persistent_client_expiration 2"])
    cid = helpers.unique("pce")
    keep = helpers.unique("pce-k")
    s = clients.v3(b, cid, clean=False)
    s.subscribe("sess/pce", qos=1)
    s.disconnect()
    k = clients.v3(b, keep, clean=False)
    k.subscribe("sess/pce", qos=1)
    time.sleep(4)
    # A connected client's session never expires.
    assert k.c.is_connected()
    s2 = clients.v3(b, cid, clean=False)
    assert not s2.session_present, "offline v3 session should expire after 2s"


def test_max_queued_messages(broker_factory, clients, version):
    b = broker_factory(["max_queued_messages 5"])
    cid = helpers.unique("mq")
    t = "sess/mq/" + cid
    s = _persistent(clients, b, version, cid)
    s.subscribe(t, qos=1)
    s.disconnect()
    pub = clients.v3(b)
    for i in range(10):
        pub.publish(t, b"%d" % i, qos=1)
    s2 = _persistent(clients, b, version, cid)
    got = s2.expect_messages(5)
    more = s2.drain(0.7)
    assert len(got) + len(more) == 5, [m.payload for m in got + more]
    # the oldest messages are kept, in order
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"]


def test_takeover_closes_first_connection_v311(broker, clients):
    cid = helpers.unique("to")
    a = clients.raw(broker, version=4)
    assert a.connect(cid, version=4).rc == 0
    b = clients.raw(broker, version=4)
    assert b.connect(cid, version=4).rc == 0
    a.wait_closed(3)
    assert b.is_open()


def test_takeover_v5_first_gets_disconnect_0x8e(broker, clients):
    cid = helpers.unique("to5")
    a = clients.raw(broker, version=5)
    assert a.connect(cid, version=5).rc == 0
    b = clients.raw(broker, version=5)
    assert b.connect(cid, version=5).rc == 0
    seen = a.wait_closed(3)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    assert discs and discs[0].rc == 0x8E, "expected DISCONNECT 0x8E, saw %r" % seen
    assert b.is_open()


def test_takeover_keeps_session_and_subscriptions(broker, clients, version):
    cid = helpers.unique("tos")
    t = "sess/tos/" + cid
    a = _persistent(clients, broker, version, cid)
    a.subscribe(t, qos=1)
    b = _persistent(clients, broker, version, cid)
    assert b.session_present
    a.wait_disconnected(3)
    clients.v3(broker).publish(t, b"after", qos=1)
    assert b.expect_message().payload == b"after"
    a.expect_no_message(0.3)


@pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])
def test_qos1_inflight_redelivered_with_dup(broker, clients, level):
    cid = helpers.unique("dup")
    t = "sess/dup/" + cid
    props = {R.P_SESSION_EXPIRY: 300} if level == 5 else None
    a = clients.raw(broker, version=level)
    assert a.connect(cid, version=level, clean=False, props=props).rc == 0
    a.subscribe([(t, 1)])
    clients.v3(broker).publish(t, b"unacked", qos=1)
    p = a.expect(R.PUBLISH)
    assert not p.dup
    a.close()  # no PUBACK
    time.sleep(0.2)
    b = clients.raw(broker, version=level)
    ack = b.connect(cid, version=level, clean=False, props=props)
    assert ack.rc == 0 and ack.session_present
    p2 = b.expect(R.PUBLISH)
    assert (p2.payload, p2.qos, p2.dup, p2.pid) == (b"unacked", 1, True, p.pid)
    b.send(R.puback(p2.pid, version=level))
    assert b.try_recv(0.5) is None


@pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])
def test_qos2_pubrel_resent_on_resume(broker, clients, level):
    cid = helpers.unique("rel")
    t = "sess/rel/" + cid
    props = {R.P_SESSION_EXPIRY: 300} if level == 5 else None
    a = clients.raw(broker, version=level)
    assert a.connect(cid, version=level, clean=False, props=props).rc == 0
    a.subscribe([(t, 2)])
    clients.v3(broker).publish(t, b"q2", qos=2)
    p = a.expect(R.PUBLISH)
    a.send(R.pubrec(p.pid, version=level))
    assert a.expect(R.PUBREL).pid == p.pid
    a.close()  # no PUBCOMP
    time.sleep(0.2)
    b = clients.raw(broker, version=level)
    assert b.connect(cid, version=level, clean=False, props=props).session_present
    rel = b.expect(R.PUBREL)
    assert rel.pid == p.pid
    b.send(R.pubcomp(rel.pid, version=level))
    assert b.try_recv(0.5) is None  # the message itself is not sent again


def test_qos2_unreceived_publish_redelivered(broker, clients):
    cid = helpers.unique("q2r")
    t = "sess/q2r/" + cid
    a = clients.raw(broker, version=4)
    assert a.connect(cid, version=4, clean=False).rc == 0
    a.subscribe([(t, 2)])
    clients.v3(broker).publish(t, b"x", qos=2)
    p = a.expect(R.PUBLISH)
    a.close()
    b = clients.raw(broker, version=4)
    assert b.connect(cid, version=4, clean=False).session_present
    p2 = b.expect(R.PUBLISH)
    assert (p2.payload, p2.dup, p2.pid) == (b"x", True, p.pid)


def test_unsubscribe_persists_across_sessions(broker, clients, version):
    cid = helpers.unique("uns")
    t = "sess/uns/" + cid
    s = _persistent(clients, broker, version, cid)
    s.subscribe(t, qos=1)
    s.unsubscribe(t)
    s.disconnect()
    clients.v3(broker).publish(t, b"x", qos=1)
    s2 = _persistent(clients, broker, version, cid)
    assert s2.session_present
    s2.expect_no_message(0.5)


def test_many_queued_messages_in_order(broker, clients):
    cid = helpers.unique("many")
    t = "sess/many/" + cid
    s = _persistent(clients, broker, V311, cid)
    s.subscribe(t, qos=1)
    s.disconnect()
    pub = clients.v3(broker)
    infos = [pub.publish(t, b"%d" % i, qos=1, wait=False) for i in range(300)]
    for i in infos:
        i.wait_for_publish(5)
    s2 = _persistent(clients, broker, V311, cid)
    got = s2.expect_messages(300, timeout=10)
    assert [int(m.payload) for m in got] == list(range(300))
