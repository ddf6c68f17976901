"""Persistent sessions, offline queues and retained messages in a real redis-server (with AOF)
that the tests start: nodes restart or die and nothing acknowledged is lost; Redis restarts
and outages behave as documented."""

import signal
import time

import pytest

import helpers
import rawmqtt


@pytest.fixture
def node(redis, broker_factory):
    """redis comes first so that it outlives the node at teardown."""
    return broker_factory(["store %s" % redis.url])


def publish_qos1(broker, topic, payloads, version=4):
    c = broker.raw(version)
    assert c.connect(helpers.unique("pub"), version=version).rc == 0
    for i, p in enumerate(payloads, start=1):
        c.send(rawmqtt.publish(topic, p, qos=1, pid=i, version=version))
        ack = c.expect(rawmqtt.PUBACK)
        assert ack.pid == i and ack.rc == 0, ack
    c.close()


def resume(broker, client_id, version=4, expect_present=True):
    c = broker.raw(version)
    kw = {"clean": False}
    if version == 5:
        kw["props"] = {rawmqtt.P_SESSION_EXPIRY: 3600}
    ack = c.connect(client_id, version=version, **kw)
    assert ack.rc == 0, ack
    assert ack.session_present == expect_present
    return c


def receive_all(c, n, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        p = c.try_recv(max(0.01, deadline - time.monotonic()))
        if p is None:
            break
        if p.type == rawmqtt.PUBLISH:
            got.append(p.payload)
            if p.qos == 1:
                c.send(rawmqtt.puback(p.pid, version=c.version))
    return got


def sigkill(node):
    """Kills node with SIGKILL and waits for it: a crash, nothing flushed."""
    node.signal(signal.SIGKILL)
    node.proc.wait()
    node.proc = None


def make_session(broker, client_id, topic, version=4):
    c = resume(broker, client_id, version, expect_present=False)
    assert c.subscribe([(topic, 1)]).codes == [1]
    c.send(rawmqtt.disconnect(version=version))
    c.close()
    time.sleep(0.2)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "sigkill"])
def test_session_survives_node_restart(node, how):
    make_session(node, "persist-1", "p/#")
    publish_qos1(node, "p/a", [b"before-%d" % i for i in range(50)])
    if how == signal.SIGKILL:
        sigkill(node)
    else:
        node.stop()
    node.start()
    publish_qos1(node, "p/b", [b"after-%d" % i for i in range(50)])
    c = resume(node, "persist-1")
    got = receive_all(c, 100)
    assert got == [b"before-%d" % i for i in range(50)] + [b"after-%d" % i for i in range(50)]
    # Acknowledged messages are gone from the store: a second resume gets nothing more.
    c.send(rawmqtt.disconnect())
    c.close()
    time.sleep(0.3)
    c = resume(node, "persist-1")
    assert receive_all(c, 1, timeout=1.0) == []
    c.close()


def test_unacknowledged_messages_come_back(node):
    make_session(node, "persist-2", "u/#")
    publish_qos1(node, "u/x", [b"m%d" % i for i in range(10)])
    c = resume(node, "persist-2")
    first = c.recv()
    assert first.payload == b"m0"
    c.close()  # no PUBACK: the messages stay owed
    node.stop()
    node.start()
    c = resume(node, "persist-2")
    got = receive_all(c, 10)
    assert got == [b"m%d" % i for i in range(10)]
    c.close()


def test_v5_session_and_clean_start_discards(node):
    make_session(node, "persist-5", "v5/#", version=5)
    publish_qos1(node, "v5/t", [b"x"])
    node.stop()
    node.start()
    c = node.raw(5)
    ack = c.connect("persist-5", version=5, clean=True,
                    props={rawmqtt.P_SESSION_EXPIRY: 3600})
    assert ack.rc == 0 and not ack.session_present
    assert receive_all(c, 1, timeout=1.0) == []
    c.close()


def test_retained_survive_restart_and_match_wildcards(node):
    publish_qos1(node, "ret/a/1", [b"one"])
    c = node.raw(4)
    assert c.connect("ret-pub").rc == 0
    c.send(rawmqtt.publish("ret/b/2", b"two", qos=1, pid=1, retain=True))
    c.expect(rawmqtt.PUBACK)
    c.send(rawmqtt.publish("ret/c/3", b"three", qos=1, pid=2, retain=True))
    c.expect(rawmqtt.PUBACK)
    c.send(rawmqtt.publish("ret/c/3", b"", qos=1, pid=3, retain=True))  # cleared
    c.expect(rawmqtt.PUBACK)
    c.close()
    node.stop()
    node.start()
    s = node.raw(4)
    assert s.connect("ret-sub").rc == 0
    assert s.subscribe([("ret/+/#", 1)]).codes == [1]
    first = s.recv()
    assert (first.topic, first.payload, first.retain) == ("ret/b/2", b"two", True)
    assert s.try_recv(1.0) is None  # ret/a/1 was never retained, ret/c/3 was cleared
    s.close()


def test_redis_restart_while_connected(node, redis):
    make_session(node, "persist-r", "rr/#")
    sub = node.raw(4)
    assert sub.connect("clean-sub").rc == 0
    sub.subscribe([("live/#", 1)])
    redis.stop()
    redis.start()
    # Clean sessions never noticed; persistent ones work again once Redis is back.
    publish_qos1(node, "live/x", [b"live"])
    assert sub.recv().payload == b"live"
    deadline = time.monotonic() + 10
    while True:
        try:
            publish_qos1(node, "rr/x", [b"after-redis-restart"])
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    c = resume(node, "persist-r")
    assert b"after-redis-restart" in receive_all(c, 1)
    c.close()
    sub.close()


def test_redis_outage(node, redis):
    make_session(node, "persist-o", "o/#")
    clean = node.raw(5)
    assert clean.connect("clean-o", version=5).rc == 0
    assert clean.subscribe([("c/#", 1)]).codes == [1]
    redis.stop()
    time.sleep(0.5)
    # CONNECT that needs the store: server unavailable.
    for version, code in ((4, 3), (5, 0x88)):
        c = node.raw(version)
        kw = {"props": {rawmqtt.P_SESSION_EXPIRY: 60}} if version == 5 else {}
        assert c.connect("persist-o", version=version, clean=False, **kw).rc == code
        c.close()
    # Clean sessions keep working.
    p5 = node.raw(5)
    assert p5.connect("pub-o", version=5).rc == 0
    p5.send(rawmqtt.publish("c/x", b"clean-ok", qos=1, pid=1, version=5))
    assert p5.expect(rawmqtt.PUBACK).rc == 0
    assert clean.recv().payload == b"clean-ok"
    # A QoS 1 publish to an offline persistent session is not acknowledged as stored.
    t0 = time.monotonic()
    p5.send(rawmqtt.publish("o/x", b"not-stored", qos=1, pid=2, version=5))
    ack = p5.expect(rawmqtt.PUBACK, timeout=15)
    assert ack.rc >= 0x80, ack
    assert time.monotonic() - t0 < 12
    p3 = node.raw(4)
    assert p3.connect("pub-o3").rc == 0
    p3.send(rawmqtt.publish("o/x", b"not-stored", qos=1, pid=1))
    assert p3.wait_closed(timeout=15) == []
    redis.start()
    deadline = time.monotonic() + 10
    while True:
        c = node.raw(4)
        rc = c.connect("persist-o", clean=False).rc
        if rc == 0 or time.monotonic() > deadline:
            break
        c.close()
        time.sleep(0.5)
    assert rc == 0
    assert receive_all(c, 1, timeout=1.0) == []  # nothing unstored was promised
    c.close()
    clean.close()
    p5.close()


def test_takeover_on_the_same_node_redelivers_what_was_owed(node):
    make_session(node, "persist-t", "t/#")
    publish_qos1(node, "t/x", [b"t%d" % i for i in range(5)])
    first = resume(node, "persist-t")
    assert [first.recv().payload for _ in range(5)] == [b"t%d" % i for i in range(5)]
    # No PUBACKs: a second connection with the same id takes over and gets them again.
    second = resume(node, "persist-t")
    first.wait_closed()
    assert receive_all(second, 5) == [b"t%d" % i for i in range(5)]
    second.close()
    first.close()


def test_sigkill_with_messages_in_flight_loses_nothing(node):
    """Messages delivered to a connected persistent subscriber but not yet acknowledged when
    the node dies are delivered again after the restart; acknowledged ones are not."""
    make_session(node, "persist-k", "k/#")
    c = resume(node, "persist-k")
    publish_qos1(node, "k/x", [b"k%d" % i for i in range(30)])
    got = [c.recv() for _ in range(20)]  # the inflight window
    assert [p.payload for p in got] == [b"k%d" % i for i in range(20)]
    for p in got[:10]:
        c.send(rawmqtt.puback(p.pid))
    time.sleep(0.5)
    sigkill(node)
    c.close()
    node.start()
    c = resume(node, "persist-k")
    assert receive_all(c, 20) == [b"k%d" % i for i in range(10, 30)]
    c.close()


def test_qos2_exactly_once_across_a_restart_mid_flow(node):
    """The publisher got PUBREC, then the node died: after the restart a resent PUBLISH (DUP)
    is recognised and not routed again, and PUBREL completes the exchange."""
    make_session(node, "persist-q2sub", "q2/#")
    pub = resume(node, "persist-q2pub", expect_present=False)
    pub.send(rawmqtt.publish("q2/x", b"once", qos=2, pid=7))
    assert pub.expect(rawmqtt.PUBREC).pid == 7
    sigkill(node)
    pub.close()
    node.start()
    pub = resume(node, "persist-q2pub")
    pub.send(rawmqtt.publish("q2/x", b"once", qos=2, pid=7, dup=True))
    assert pub.expect(rawmqtt.PUBREC).pid == 7
    pub.send(rawmqtt.pubrel(7))
    comp = pub.expect(rawmqtt.PUBCOMP)
    assert comp.pid == 7 and comp.rc == 0
    # The id is free again, durably: a new message with it is a new message.
    pub.send(rawmqtt.publish("q2/x", b"next", qos=2, pid=7))
    assert pub.expect(rawmqtt.PUBREC).pid == 7
    pub.send(rawmqtt.pubrel(7))
    pub.expect(rawmqtt.PUBCOMP)
    pub.close()
    sub = resume(node, "persist-q2sub")
    assert receive_all(sub, 3, timeout=2.0) == [b"once", b"next"]
    sub.close()


def test_stale_owner_write_is_fenced(redis, broker_factory):
    """Two nodes on one Redis. A client moves from node A to node B; when A's copy of the
    session later expires, A's delete carries the old epoch and Redis refuses it."""
    a = broker_factory(["store %s" % redis.url])
    b = broker_factory(["store %s" % redis.url])
    c = a.raw(5)
    assert c.connect("fenced", version=5, clean=False,
                     props={rawmqtt.P_SESSION_EXPIRY: 2}).rc == 0
    assert c.subscribe([("f/#", 1)]).codes == [1]
    c.send(rawmqtt.disconnect(version=5))
    c.close()
    c = b.raw(5)
    ack = c.connect("fenced", version=5, clean=False, props={rawmqtt.P_SESSION_EXPIRY: 3600})
    assert ack.rc == 0 and ack.session_present  # read from Redis: A wrote it
    c.send(rawmqtt.disconnect(version=5))
    c.close()
    deadline = time.monotonic() + 8
    while "fenced by a newer owner" not in a.stderr() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "fenced by a newer owner" in a.stderr()
    assert redis.cli("EXISTS", "shoal:v1:{fenced}:sess").strip() == "1"
    publish_qos1(b, "f/x", [b"still-here"])
    c = b.raw(5)
    ack = c.connect("fenced", version=5, clean=False, props={rawmqtt.P_SESSION_EXPIRY: 3600})
    assert ack.session_present
    assert receive_all(c, 1) == [b"still-here"]
    c.close()


def test_will_survives_a_node_kill(node):
    """The will of a persistent session is stored with it: when the node dies under a
    connected client, the restarted node publishes it (here into another persistent
    session's stored queue). A client that left with DISCONNECT leaves no will behind."""
    make_session(node, "will-sub", "wills/#")
    gone = node.raw(4)
    assert gone.connect("will-gone", clean=False,
                        will={"topic": "wills/gone", "payload": b"not-sent", "qos": 1}).rc == 0
    gone.send(rawmqtt.disconnect())
    gone.close()
    dying = node.raw(4)
    assert dying.connect("will-dying", clean=False,
                         will={"topic": "wills/dying", "payload": b"bye", "qos": 1}).rc == 0
    sigkill(node)
    dying.close()
    node.start()
    c = resume(node, "will-sub")
    assert receive_all(c, 2, timeout=2.0) == [b"bye"]
    c.close()
    # Published once: the stored state no longer holds it.
    node.restart()
    c = resume(node, "will-sub")
    assert receive_all(c, 1, timeout=1.0) == []
    c.close()


def test_suback_waits_until_the_subscription_is_stored(node, redis):
    """With Redis frozen (SIGSTOP), a persistent session's SUBACK is held back; it arrives
    once the subscription is written, and the subscription then survives a SIGKILL."""
    c = resume(node, "persist-sa", expect_present=False)
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        c.send(rawmqtt.subscribe(7, [("sa/#", 1)]))
        assert c.try_recv(0.7) is None
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    ack = c.expect(rawmqtt.SUBACK, timeout=5)
    assert ack.pid == 7
    sigkill(node)
    c.close()
    node.start()
    publish_qos1(node, "sa/x", [b"kept"])
    c = resume(node, "persist-sa")
    assert receive_all(c, 1) == [b"kept"]
    c.close()


def test_connack_waits_until_the_session_is_stored(node, redis):
    """A new persistent session is written before its CONNACK: SIGKILL right after the
    CONNACK still finds it after the restart."""
    for i in range(3):
        c = resume(node, "persist-ca%d" % i, expect_present=False)
        sigkill(node)
        c.close()
        node.start()
        c = resume(node, "persist-ca%d" % i, expect_present=True)
        c.close()



def test_a_frozen_store_loses_no_acknowledged_message(node, redis):
    """Redis freezes (SIGSTOP) past the command timeout while a connected persistent
    subscriber receives messages. Their appends fail for the publisher: the first one was sent
    and may still be applied when Redis wakes, the later ones never left the node. The
    subscriber acknowledges them only after Redis is back, when newer stored messages wait
    behind them: trimming those acknowledgements must remove exactly the entries they name.
    A SIGKILL of the node then brings back every stored message not acknowledged, and nothing
    else."""
    make_session(node, "persist-g", "g/#")
    make_session(node, "persist-probe", "probe/#")
    sub = resume(node, "persist-g")
    pub = node.raw(5)
    assert pub.connect("pub-g", version=5).rc == 0

    def publish(topic, payload, pid):
        pub.send(rawmqtt.publish(topic, payload, qos=1, pid=pid, version=5))
        ack = pub.expect(rawmqtt.PUBACK, timeout=10)
        assert ack.pid == pid, ack
        return ack.rc

    def take(n, timeout=10):
        """n PUBLISHes to the subscriber, not acknowledged yet."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            p = sub.try_recv(max(0.01, deadline - time.monotonic()))
            if p is not None and p.type == rawmqtt.PUBLISH:
                got.append(p)
        assert len(got) == n, [p.payload for p in got]
        return got

    for i in range(1, 4):
        assert publish("g/x", b"g%d" % i, i) == 0
    for p in take(3):
        sub.send(rawmqtt.puback(p.pid))

    redis.proc.send_signal(signal.SIGSTOP)
    try:
        # Sent, then timed out with the connection it was on.
        assert publish("g/x", b"f4", 4) >= 0x80
        # Never sent: they wait for a connection and time out in the node.
        assert publish("g/x", b"f5", 5) >= 0x80
        assert publish("g/x", b"f6", 6) >= 0x80
        frozen = take(3)
        assert [p.payload for p in frozen] == [b"f4", b"f5", b"f6"]
    finally:
        redis.proc.send_signal(signal.SIGCONT)

    pid = 7
    deadline = time.monotonic() + 10
    while publish("probe/x", b"probe", pid) != 0:  # until the store is back
        assert time.monotonic() < deadline, "the store did not come back"
        pid += 1
        time.sleep(0.3)
    stored = [b"g%d" % i for i in range(pid + 1, pid + 6)]
    for i, payload in enumerate(stored, start=pid + 1):
        assert publish("g/x", payload, i) == 0
    assert [p.payload for p in take(5)] == stored
    for p in frozen:
        sub.send(rawmqtt.puback(p.pid))
    time.sleep(1.0)

    sigkill(node)
    sub.close()
    pub.close()
    node.start()
    c = resume(node, "persist-g")
    assert receive_all(c, 6, timeout=3) == stored
    time.sleep(0.5)
    assert int(redis.cli("LLEN", "shoal:v1:{persist-g}:q")) == 0
    c.close()
