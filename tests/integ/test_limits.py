"""Configured limits: max_connections per listener, message_size_limit, several listeners,
max_packet_size for v3 clients."""

import socket
import time

import pytest

import helpers
import rawmqtt as R


def _refused(b):
    """True if a new connection on b is refused: TCP refused, closed, or CONNACK rc != 0."""
    try:
        c = b.raw(version=4, timeout=3)
    except OSError:
        return True
    try:
        c.send(R.connect(helpers.unique("extra"), version=4))
        p = c.recv(3)
        if p.type == R.CONNACK and p.rc != 0:
            return True
        return False
    except (R.Closed, OSError):
        return True
    except socket.timeout:
        return False
    finally:
        c.close()


def test_max_connections(broker_factory, clients):
    b = broker_factory(["max_connections 3"])
    time.sleep(0.3)  # let the broker reap the fixture's readiness probe connection
    conns = [clients.raw_connected(b, version=4) for _ in range(3)]
    assert _refused(b), "a 4th connection was accepted with max_connections 3"
    assert all(c.is_open() for c in conns)
    conns[0].send(R.disconnect())
    conns[0].wait_closed(3)
    # a slot is free again
    helpers.wait_until(lambda: not _refused(b), timeout=3, msg="slot freed")


def test_max_connections_only_on_its_listener(broker_factory, clients):
    b = broker_factory(["max_connections 1"], listeners=2)
    time.sleep(0.3)
    clients.raw_connected(b, version=4)
    assert _refused(b)
    # the second listener has no limit
    for _ in range(3):
        c = clients.raw(b, version=4, port=b.ports[1])
        assert c.connect(helpers.unique(), version=4).rc == 0


@pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])
def test_message_size_limit(broker_factory, clients, level):
    b = broker_factory(["message_size_limit 100"])
    sub = clients.v5(b) if level == 5 else clients.v3(b)
    t = "lim/msl/" + sub.client_id
    sub.subscribe(t, qos=1)
    # raw publisher: paho 1.6 cannot parse every PUBACK reason code (0x97)
    pub = clients.raw_connected(b, version=level)
    pub.publish(t, b"x" * 200, qos=0)
    pub.publish(t, b"y" * 200, qos=1, pid=1)
    try:
        ack = pub.recv(2)  # PUBACK (maybe 0x97 in v5) or DISCONNECT; or closed
        assert ack.type in (R.PUBACK, R.DISCONNECT), ack
    except (R.Closed, OSError):
        pass
    # The oversize publisher may have been disconnected: publish from a new client.
    clients.v3(b).publish(t, b"small", qos=1)
    m = sub.expect_message()
    assert m.payload == b"small", "an oversize message was delivered (%d bytes)" % len(m.payload)
    sub.expect_no_message(0.3)


def test_two_listeners_both_serve(broker_factory, clients):
    b = broker_factory(listeners=2)
    sub = clients.v3(b, port=b.ports[1])
    sub.subscribe("lim/two", qos=1)
    pub = clients.v5(b, port=b.ports[0])
    pub.publish("lim/two", b"across", qos=1)
    assert sub.expect_message().payload == b"across"
    sub2 = clients.v5(b, port=b.ports[0])
    sub2.subscribe("lim/two/back", qos=1)
    clients.v3(b, port=b.ports[1]).publish("lim/two/back", b"back", qos=1)
    assert sub2.expect_message().payload == b"back"


def test_max_packet_size_v311_closes(broker_factory, clients):
    b = broker_factory(["max_packet_size 1000"])
    watcher = clients.v3(b)
    watcher.subscribe("lim/mps", qos=0)
    c = clients.raw_connected(b, version=4)
    c.publish("lim/mps", b"z" * 3000)
    c.wait_closed(3)
    watcher.expect_no_message(0.3)
    ok = clients.raw_connected(b, version=4)
    ok.publish("lim/mps", b"fine")
    assert watcher.expect_message().payload == b"fine"


def test_max_packet_size_large_subscribe_rejected(broker_factory, clients):
    b = broker_factory(["max_packet_size 1000"])
    c = clients.raw_connected(b, version=5)
    c.send(R.subscribe(1, [("lim/" + "s" * 1500, 0)], version=5))
    seen = c.wait_closed(3)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    assert discs and discs[0].rc == 0x95, seen


def test_many_clients(shared_broker, clients):
    subs = [clients.raw_connected(shared_broker, version=4) for _ in range(200)]
    for s in subs:
        s.send(R.subscribe(1, [("lim/many", 0)]))
    for s in subs:
        s.expect(R.SUBACK)
    clients.v3(shared_broker).publish("lim/many", b"m", qos=1)
    for s in subs:
        assert s.expect(R.PUBLISH).payload == b"m"


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _sanitized(pid):
    with open("/proc/%d/maps" % pid) as f:
        return any("libasan" in line or "libtsan" in line for line in f)


def test_slow_consumer_is_bounded(broker_factory, clients):
    """A subscriber that never reads gets a bounded queue: it must not stall the publisher or
    other clients, nor make the broker buffer without limit (DESIGN: performance principles)."""
    b = broker_factory()
    slow = clients.raw_connected(b, version=4)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.subscribe([("lim/slow", 0)])
    watcher = clients.v3(b)
    watcher.subscribe("lim/slow/ok", qos=1)
    pub = clients.raw(b, version=4, timeout=30)
    assert pub.connect(helpers.unique("pub"), version=4).rc == 0
    rss0 = _rss_kb(b.proc.pid)
    chunk = b"s" * 16384
    worst, worst_i = 0.0, -1
    for i in range(3000):  # ~48 MB towards a reader that never reads
        t = time.monotonic()
        pub.send(R.publish("lim/slow", chunk))
        if time.monotonic() - t > worst:
            worst, worst_i = time.monotonic() - t, i
    t1 = time.monotonic()
    clients.v3(b).publish("lim/slow/ok", b"alive", qos=1)
    assert watcher.expect_message().payload == b"alive"
    assert time.monotonic() - t1 < 2.5, "broker stalled by a slow consumer"
    grown_mb = (_rss_kb(b.proc.pid) - rss0) / 1024
    if not _sanitized(b.proc.pid):  # ASan's quarantine keeps freed memory resident
        assert grown_mb < 40, "broker grew %.0f MB buffering for a slow consumer" % grown_mb
    assert worst < 2.0, "the publisher was blocked %.1fs (at message %d) by a subscriber " \
        "that does not read" % (worst, worst_i)


def test_many_subscriptions_one_client(shared_broker, clients):
    c = clients.raw_connected(shared_broker, version=4)
    base = "lim/subs/" + helpers.unique()
    filters = [("%s/%d" % (base, i), 1) for i in range(1000)]
    for i in range(0, 1000, 100):
        assert c.subscribe(filters[i:i + 100], pid=i + 1).codes == [1] * 100
    pub = clients.v3(shared_broker)
    for i in (0, 499, 999):
        pub.publish("%s/%d" % (base, i), b"%d" % i, qos=0)
    got = [c.expect(R.PUBLISH).payload for _ in range(3)]
    assert got == [b"0", b"499", b"999"]


@pytest.mark.parametrize("levels", [1000, 20000])
def test_deep_topics(shared_broker, clients, levels):
    """No recursion on peer data: very deep filters and topics are handled or refused,
    never a crash."""
    topic = "/".join(["d"] * levels)
    c = clients.raw_connected(shared_broker, version=4)
    c.send(R.subscribe(1, [(topic, 0), ("/".join(["+"] * levels), 0),
                           ("/".join(["d"] * (levels - 1)) + "/#", 0)]))
    try:
        c.expect(R.SUBACK)
        c.publish(topic, b"deep")
        c.recv(3)
    except (R.Closed, OSError):
        pass
    assert shared_broker.alive(), shared_broker.stderr()
    h = clients.v3(shared_broker)
    h.subscribe("lim/deep/ok")
    h.publish("lim/deep/ok", b"x")
    assert h.expect_message().payload == b"x"
