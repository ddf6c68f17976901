"""Flow control: a slow subscriber pauses the publishers feeding it, so QoS 1 delivery stays
lossless even far past max_queued_messages; a subscriber that stops acknowledging releases
the publishers after a bounded time and its own queue limit applies again."""

import time

import helpers
import rawmqtt as R

LIMITS = ["max_queued_messages 20", "max_inflight_messages 5"]


def _pipeline_publishes(pub, topic, n):
    data = b"".join(R.publish(topic, b"%d" % i, qos=1, pid=i + 1) for i in range(n))
    pub.send(data)


def test_slow_subscriber_loses_nothing(broker_factory, clients):
    b = broker_factory(LIMITS)
    sub = clients.raw_connected(b, version=4)
    t = "flow/lossless/" + helpers.unique()
    sub.subscribe([(t, 1)])
    pub = clients.raw_connected(b, version=4)
    n = 600
    _pipeline_publishes(pub, t, n)  # far more than the queue (20) + window (5)
    got = []
    deadline = time.time() + 20
    while len(got) < n and time.time() < deadline:
        p = sub.expect(R.PUBLISH, 5)
        got.append(int(p.payload))
        sub.send(R.puback(p.pid))
    assert got == list(range(n)), "lost or reordered messages under a slow subscriber"
    acks = [pub.expect(R.PUBACK, 5).pid for _ in range(n)]
    assert sorted(acks) == list(range(1, n + 1))


def test_stuck_subscriber_releases_publishers(broker_factory, clients):
    b = broker_factory(LIMITS)
    stuck = clients.raw_connected(b, version=4)
    t = "flow/stuck/" + helpers.unique()
    stuck.subscribe([(t, 1)])
    healthy = clients.v3(b)
    healthy.subscribe(t, qos=1)
    pub = clients.raw_connected(b, version=4)
    n = 200
    start = time.time()
    _pipeline_publishes(pub, t, n)
    acks = [pub.expect(R.PUBACK, 10).pid for _ in range(n)]
    took = time.time() - start
    assert sorted(acks) == list(range(1, n + 1))
    assert took < 9, "publisher held back %.1fs by a subscriber that never acks" % took
    # The healthy subscriber got everything; the stuck one only its window.
    got = healthy.expect_messages(n, timeout=10)
    assert [int(m.payload) for m in got] == list(range(n))
    window = [stuck.expect(R.PUBLISH, 3) for _ in range(5)]
    assert [int(p.payload) for p in window] == list(range(5))
    assert stuck.try_recv(0.3) is None


def test_qos0_fanout_to_fast_subscribers_is_complete(broker_factory, clients):
    b = broker_factory([])
    subs = [clients.raw_connected(b, version=4) for _ in range(20)]
    t = "flow/fan/" + helpers.unique()
    for s in subs:
        s.subscribe([(t, 0)])
    pub = clients.raw_connected(b, version=4)
    n = 2000
    pub.send(b"".join(R.publish(t, b"%d" % i, qos=0) for i in range(n)))
    for s in subs:
        got = [int(s.expect(R.PUBLISH, 5).payload) for _ in range(n)]
        assert got == list(range(n))


def test_a_consumer_that_keeps_up_with_bursts_holds_no_publisher(broker_factory, clients):
    """Bursts larger than the congestion mark (512 KB) reach one subscriber within a single
    loop pass, and it reads them at once. Flow control pauses the publisher for the burst,
    and must see the kernel take the output as progress: the consumer is not congested a
    second later, so it is never taken for a stuck one (whose publishers flow control stops
    waiting for, after which its QoS 0 backlog is cut)."""
    import threading
    b = broker_factory([])
    sub = clients.raw_connected(b, version=4)
    t = "flow/burst/" + helpers.unique()
    sub.subscribe([(t, 0)])
    pub = clients.raw_connected(b, version=4)
    bursts, per_burst, body = 25, 1000, b"b" * 1024
    n = bursts * per_burst
    got = []

    def read():
        while len(got) < n:
            p = sub.expect(R.PUBLISH, 10)
            got.append(p.payload[:8])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    start = time.monotonic()
    for i in range(bursts):  # 1 MB every 100 ms for 2.5 s
        pub.send(b"".join(R.publish(t, b"%08d" % (i * per_burst + k) + body)
                          for k in range(per_burst)))
        time.sleep(max(0.0, start + (i + 1) * 0.1 - time.monotonic()))
    reader.join(20)
    assert len(got) == n, "received %d of %d" % (len(got), n)
    assert got == [b"%08d" % k for k in range(n)]
    log = open(b.stdout_path, "rb").read().decode("utf-8", "replace") + b.stderr()
    assert "slow consumer no longer holds publishers" not in log, \
        "a consumer that kept up was taken for a stuck one"
