"""Network partitions between cluster nodes. Each of three nodes runs in a network namespace of
its own on one bridge (netnslib); a cut is a pair of blackhole routes between two nodes, so the
nodes stop hearing each other while the test's clients and Redis still reach all of them.

A cut is held until both sides have declared each other cut off (the node logs "member cut off
peer=X": 5 s of silence closes a link, 5 s more without one, while Redis still lists the member
alive), then healed. The tests check that routes converge after a heal, that a client id
connected on both sides of a cut keeps only its newer connection once the cut heals, and that
no acknowledged QoS 1 message is lost across a cut.

These tests need root: they fail (not skip) when namespaces cannot be made.
"""

import collections
import socket
import threading
import time

import pytest

import conftest
import helpers
import netnslib
import rawmqtt as R

CUT_DETECT = 20.0  # bound for both sides of a cut to declare each other dead (~10 s expected)
CONVERGE = 20.0  # bound for routes to work both ways again after a heal
OWNERSHIP = 15.0  # bound, after a heal, for a client id to keep only one connection
SETTLE = 0.5  # how long to listen for extra messages once the expected ones are in


@pytest.fixture
def net():
    """Three node namespaces on a bridge, reachable from the test process; removed at the end
    whatever the outcome."""
    n = netnslib.Net(3)
    failure = None
    try:
        n.up()
    except netnslib.NetError as e:
        failure = str(e)
    if failure is not None:
        pytest.fail("cannot set up the test's network namespaces: " + failure, pytrace=False)
    yield n
    n.down()


@pytest.fixture
def net_redis(net, tmp_path_factory):
    """Redis in the root namespace, on the test network's root address, so every node reaches
    it through the bridge and no cut touches it."""
    r = conftest.Redis(tmp_path_factory.mktemp("redis"), host=net.root_addr).start()
    yield r
    r.stop()


@pytest.fixture
def cluster(net, net_redis, broker_factory):
    """node1..node3 in their namespaces, formed. The brokers belong to broker_factory: they are
    stopped and checked (crash, sanitizer report) before Redis and the namespaces go."""
    cl = netnslib.NetCluster(broker_factory, net_redis, net, n=3)
    cl.wait_formed()
    return cl


def cut_until_dead(net, cluster, side_a, side_b):
    """Cuts side_a (node indexes) from side_b and waits until each side has declared every
    node of the other dead. Returns (monotonic time of the cut, seconds to detection)."""
    watches = {n.node_id: netnslib.LogWatch(n) for n in cluster.nodes}
    t_cut = time.monotonic()
    net.cut(side_a, side_b)
    took = netnslib.declared_dead(cluster, watches,
                                  [cluster.nodes[i].node_id for i in side_a],
                                  [cluster.nodes[j].node_id for j in side_b], CUT_DETECT)
    return t_cut, took


# --- 1. routes converge ------------------------------------------------------------------------

def test_routes_converge_after_heal(net, cluster, clients):
    """Every node has an "old" subscriber (made before the cut) to p/old/K/+; node3 is cut
    from node1 and node2 until they declare each other dead; then every node gets a "new"
    subscriber to p/new/K/+. While cut, QoS 0 publishes cross between node1 and node2 but
    never to or from node3. Once healed, within CONVERGE seconds a publish on every node
    reaches the old and the new subscriber of every other node (channel p/AGE/SUB/PUB); then
    5 QoS 1 messages per channel arrive exactly once each, in order. No subscriber ever gets
    a message twice."""
    nodes = cluster.nodes
    n = len(nodes)
    p = helpers.unique("rc")
    subs, got = {}, collections.defaultdict(list)

    def subscribe(age):
        for j, node in enumerate(nodes):
            c = clients.v3(node, helpers.unique("%s%d" % (age, j + 1)))
            c.subscribe("%s/%s/%d/+" % (p, age, j + 1), qos=1)
            subs[(age, j)] = c

    def topic(age, j, k):
        return "%s/%s/%d/%d" % (p, age, j + 1, k + 1)

    def pump():
        for key, c in subs.items():
            got[key] += c.drain(0)

    def delivered(age, j, k, tag):
        t = topic(age, j, k)
        return [m.payload.decode() for m in got[(age, j)]
                if m.topic == t and m.payload.decode().startswith(tag)]

    subscribe("old")
    cluster.sync_routes()
    pubs = [clients.v3(node, helpers.unique("pub%d" % (k + 1))) for k, node in enumerate(nodes)]
    t_cut, detect = cut_until_dead(net, cluster, [2], [0, 1])
    subscribe("new")
    channels = [(age, j, k) for age in ("old", "new") for j in range(n) for k in range(n)
                if j != k]

    # While cut: node1 <-> node2 works, nothing crosses to or from node3.
    for r in range(6):
        for age, j, k in channels:
            pubs[k].publish(topic(age, j, k), ("cut-%d" % r).encode(), qos=0)
        time.sleep(0.2)
    time.sleep(SETTLE)
    pump()
    for age, j, k in channels:
        seen = delivered(age, j, k, "cut-")
        if 2 in (j, k):
            assert not seen, "while cut, %s from node%d reached node%d: %r" % (
                age, k + 1, j + 1, seen)
        else:
            assert seen, "while node3 was cut, node%d's publishes never reached node%d's " \
                "%s subscriber" % (k + 1, j + 1, age)

    t_heal = time.monotonic()
    net.heal()
    pending = set(channels)
    took = {}
    rnd = 0
    while pending:
        for age, j, k in sorted(pending):
            pubs[k].publish(topic(age, j, k), ("conv-%d" % rnd).encode(), qos=0)
        rnd += 1
        time.sleep(0.2)
        pump()
        for ch in sorted(pending):
            if delivered(*ch, "conv-"):
                pending.discard(ch)
                took[ch] = time.monotonic() - t_heal
        if pending and time.monotonic() - t_heal > CONVERGE:
            raise AssertionError("%.0fs after the heal, no delivery on: %s" % (
                CONVERGE, ", ".join("%s node%d->node%d" % (a, k + 1, j + 1)
                                    for a, j, k in sorted(pending))))

    # Exact round at QoS 1.
    expect = {}
    for i in range(5):
        for age, j, k in channels:
            body = "final-%d" % i
            pubs[k].publish(topic(age, j, k), body.encode(), qos=1)
            expect.setdefault((age, j, k), []).append(body)
    total = sum(map(len, expect.values()))
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        pump()
        if sum(len(delivered(*ch, "final-")) for ch in channels) >= total:
            break
        time.sleep(0.05)
    time.sleep(SETTLE)
    pump()
    for ch in channels:
        age, j, k = ch
        assert delivered(*ch, "final-") == expect[ch], \
            "%s subscriber on node%d, from node%d after the heal: %r" % (
                age, j + 1, k + 1, delivered(*ch, "final-"))
    for key, msgs in got.items():
        dup = [m for m, c in collections.Counter((m.topic, m.payload) for m in msgs).items()
               if c > 1]
        assert not dup, "%s subscriber on node%d got duplicates: %r" % (
            key[0], key[1] + 1, dup[:5])
    print("\nroutes: cut detected after %.1fs; after the heal, channels worked again "
          "within %.1fs (node3's channels: %s)" % (
              detect, max(took.values()),
              ", ".join("%s %d->%d %.1fs" % (a, k + 1, j + 1, took[(a, j, k)])
                        for a, j, k in sorted(took) if 2 in (j, k))))


# --- 2. one connection per client id after a heal ------------------------------------------------

class ConnWatch(threading.Thread):
    """Reads a raw connection until it closes: records the packets and when it closed.
    Acknowledges QoS 1 PUBLISHes so that a live connection stays healthy."""

    def __init__(self, conn, label):
        super().__init__(daemon=True)
        self.conn, self.label = conn, label
        self.packets = []
        self.closed_at = None
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                pk = self.conn.recv(0.2)
            except socket.timeout:
                continue
            except (R.Closed, OSError, R.ProtocolError):
                self.closed_at = time.monotonic()
                return
            self.packets.append(pk)
            if pk.type == R.PUBLISH and pk.qos == 1:
                try:
                    self.conn.send(R.puback(pk.pid, version=self.conn.version))
                except OSError:
                    pass

    def of_type(self, ptype):
        return [pk for pk in self.packets if pk.type == ptype]

    def stop(self):
        self.halt.set()
        self.join(2.0)


def _in_parallel(fn, items):
    """Calls fn(item) for every item at once, each on a thread; re-raises the first error."""
    errors = []

    def run(item):
        try:
            fn(item)
        except BaseException as e:  # noqa: B902 - handed to the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30.0)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), "a connect did not finish within 30 s"


def _connect_persistent(clients, node, cid, version):
    c = clients.raw(node, version=version, timeout=10.0)
    kw = {"clean": False, "version": version}
    if version == 5:
        kw["props"] = {R.P_SESSION_EXPIRY: 3600}
    ack = c.connect(cid, **kw)
    return c, ack


def test_one_connection_per_client_id_after_heal(net, cluster, clients):
    """Four persistent client ids (MQTT 3.1.1 and 5, each "early" and "late") connect to node1
    and subscribe to a topic of their own. node1 is cut from node2 (node3 still reaches
    both). One second into the cut the early ids connect to node2 (node2 may still believe
    node1 alive and ask it for a takeover that cannot arrive); once each side has declared the
    other dead, the late ids connect to node2. Every CONNECT to node2 succeeds: the store grants
    it the client id. Within OWNERSHIP seconds of the heal, every connection on node1 is
    closed (an MQTT 5 one, if it gets a DISCONNECT, with 0x8E session taken over), and every
    connection on node2 is still open, gets no DISCONNECT and receives what is published to
    its topic on node3."""
    n1, n2, n3 = cluster.nodes
    keys = [(v, when) for when in ("early", "late") for v in (4, 5)]
    cid = {k: helpers.unique("own-%s-v%d" % (k[1], k[0])) for k in keys}
    topic = {k: "%s/t" % cid[k] for k in keys}

    def label(k):
        return "%s (MQTT %s, %s)" % (cid[k], "3.1.1" if k[0] == 4 else "5", k[1])

    old, new, old_w, new_w = {}, {}, {}, {}
    for k in keys:
        c, ack = _connect_persistent(clients, n1, cid[k], k[0])
        assert ack.rc == 0, "%s on node1: CONNACK 0x%02x" % (label(k), ack.rc)
        assert c.subscribe([(topic[k], 0)]).codes == [0]
        old[k] = c
    for k in keys:
        old_w[k] = ConnWatch(old[k], "old " + label(k))
        old_w[k].start()

    connack_s = {}

    def connect_new(k):
        t0 = time.monotonic()
        c, ack = _connect_persistent(clients, n2, cid[k], k[0])
        connack_s[k] = time.monotonic() - t0
        assert ack.rc == 0, "%s on node2 during the cut: CONNACK 0x%02x (the store should " \
            "grant the new owner)" % (label(k), ack.rc)
        assert c.subscribe([(topic[k], 0)]).codes == [0]
        new[k] = c
        new_w[k] = ConnWatch(c, "new " + label(k))
        new_w[k].start()

    watches = {n.node_id: netnslib.LogWatch(n) for n in cluster.nodes}
    t_cut = time.monotonic()
    net.cut([0], [1])
    try:
        time.sleep(1.0)
        _in_parallel(connect_new, [k for k in keys if k[1] == "early"])
        netnslib.declared_dead(cluster, watches, ["node1"], ["node2"], CUT_DETECT)
        detect = time.monotonic() - t_cut
        _in_parallel(connect_new, [k for k in keys if k[1] == "late"])
        closed_in_cut = {k for k in keys if old_w[k].closed_at is not None}
        t_heal = time.monotonic()
        net.heal()
        deadline = t_heal + OWNERSHIP
        while time.monotonic() < deadline:
            if all(old_w[k].closed_at is not None for k in keys):
                break
            if any(new_w[k].closed_at is not None for k in keys):
                break
            time.sleep(0.1)
        # What reaches each client id's topic now goes to the new connection only.
        pub = clients.v3(n3, helpers.unique("ownpub"))
        reached = set()
        t0 = time.monotonic()
        while len(reached) < len(keys) and time.monotonic() - t0 < 5.0:
            for k in keys:
                if k not in reached:
                    pub.publish(topic[k], b"after-heal", qos=0)
            time.sleep(0.2)
            reached = {k for k in keys
                       if any(pk.payload == b"after-heal" for pk in new_w[k].of_type(R.PUBLISH))}
        time.sleep(SETTLE)
    finally:
        net.heal()
        for w in list(old_w.values()) + list(new_w.values()):
            w.stop()

    problems, report = [], []
    for k in keys:
        o, nw = old_w[k], new_w[k]
        if o.closed_at is None:
            problems.append("%s: still connected on node1 %.0fs after the heal (and on node2)"
                            % (label(k), time.monotonic() - t_heal))
            report.append("%s: node1 connection never closed" % label(k))
        else:
            when = ("during the cut, %.1fs after it" % (o.closed_at - t_cut)
                    if k in closed_in_cut else "%.1fs after the heal" % (o.closed_at - t_heal))
            report.append("%s: node1 connection closed %s" % (label(k), when))
        report[-1] += "; CONNACK on node2 took %.1fs" % connack_s[k]
        if any(pk.payload == b"after-heal" for pk in o.of_type(R.PUBLISH)):
            problems.append("%s: the node1 connection got a message published after the heal "
                            "too" % label(k))
        discs = o.of_type(R.DISCONNECT)
        if k[0] == 5 and discs and discs[0].rc != 0x8E:
            problems.append("%s: node1 sent DISCONNECT 0x%02x, expected 0x8E" % (
                label(k), discs[0].rc))
        if nw.closed_at is not None:
            problems.append("%s: the newer connection, on node2, was closed (%+.1fs from "
                            "the heal)" % (label(k), nw.closed_at - t_heal))
        if nw.of_type(R.DISCONNECT):
            problems.append("%s: node2 sent DISCONNECT %r to the newer connection" % (
                label(k), nw.of_type(R.DISCONNECT)))
        if k not in reached:
            problems.append("%s: the node2 connection got nothing published to %s after the "
                            "heal" % (label(k), topic[k]))
    print("\nownership: cut detected after %.1fs\n  %s" % (detect, "\n  ".join(report)))
    assert not problems, "\n".join(problems)


# --- 3. nothing acknowledged is lost across a cut ------------------------------------------------

class Publisher(threading.Thread):
    """Publishes QoS 1 (MQTT 5) at about rate msg/s with up to 20 in flight, numbering its
    payloads; records which ones were acknowledged as stored (reason code below 0x80)."""

    def __init__(self, conn, topic, rate):
        super().__init__(daemon=True)
        self.conn, self.topic, self.rate = conn, topic, rate
        self.sent, self.acked, self.refused = 0, [], []
        self.inflight = {}
        self.longest_wait = 0.0
        self.halt = threading.Event()
        self.error = None

    def run(self):
        try:
            nxt = time.monotonic()
            while not (self.halt.is_set() and not self.inflight):
                now = time.monotonic()
                if not self.halt.is_set() and len(self.inflight) < 20 and now >= nxt:
                    self.sent += 1
                    pid = (self.sent - 1) % 65535 + 1
                    payload = b"m%d" % self.sent
                    self.inflight[pid] = (payload, now)
                    self.conn.send(R.publish(self.topic, payload, qos=1, pid=pid, version=5))
                    nxt += 1.0 / self.rate
                    continue
                try:
                    pk = self.conn.recv(0.005)
                except socket.timeout:
                    continue
                if pk.type == R.PUBACK and pk.pid in self.inflight:
                    payload, t0 = self.inflight.pop(pk.pid)
                    self.longest_wait = max(self.longest_wait, time.monotonic() - t0)
                    (self.acked if pk.rc < 0x80 else self.refused).append(payload)
        except BaseException as e:  # noqa: B902 - reported by the test
            self.error = e

    def stop(self, timeout):
        self.halt.set()
        self.join(timeout)


def test_a_cut_loses_no_acknowledged_qos1_message(net, cluster, clients):
    """A persistent and a clean QoS 1 subscriber on node3; a publisher on node1 sends 200
    QoS 1 msg/s. node3 is cut from node1 and node2 until each side declares the other cut off
    (about 10 s: until then the publisher's window waits), then for 4 s more, then healed.
    Every message acknowledged to the publisher reaches both subscribers, exactly once: what
    was in flight at the cut and what was published while cut off is parked in Redis for
    node3, which takes it from there; a forward both parked and resent after the heal is
    delivered once."""
    n1, _, n3 = cluster.nodes
    topic = helpers.unique("cut") + "/q1"
    watches = []
    for name, clean in (("persistent", False), ("clean", True)):
        c = clients.raw(n3, version=4, timeout=10.0)
        assert c.connect(helpers.unique("cutsub"), clean=clean).rc == 0
        assert c.subscribe([(topic, 1)]).codes == [1]
        w = ConnWatch(c, name)
        w.start()
        watches.append(w)
    cluster.sync_routes()
    pc = clients.raw(n1, version=5, timeout=10.0)
    assert pc.connect(helpers.unique("cutpub"), version=5).rc == 0
    pub = Publisher(pc, topic, 200)
    pub.start()
    try:
        time.sleep(1.0)
        t_cut, detect = cut_until_dead(net, cluster, [2], [0, 1])
        time.sleep(4.0)
        net.heal()
        time.sleep(2.0)
        pub.stop(30.0)
        assert pub.error is None, pub.error
        assert not pub.is_alive(), "the publisher still waits for acknowledgements"
        deadline = time.monotonic() + 20.0
        want = set(pub.acked)
        while time.monotonic() < deadline:
            if all(want <= {pk.payload for pk in w.of_type(R.PUBLISH)} for w in watches):
                break
            time.sleep(0.2)
        time.sleep(SETTLE)
    finally:
        net.heal()
        for w in watches:
            w.stop()
    problems = []
    lines = ["published %d, acknowledged %d, refused %d; cut detected after %.1fs; longest "
             "PUBACK wait %.1fs" % (pub.sent, len(pub.acked), len(pub.refused), detect,
                                    pub.longest_wait)]
    for w in watches:
        got = [pk.payload for pk in w.of_type(R.PUBLISH)]
        counts = collections.Counter(got)
        lost = sorted(want - set(got), key=lambda p: int(p[1:]))
        dup = sorted((p for p, k in counts.items() if k > 1), key=lambda p: int(p[1:]))
        lines.append("%s subscriber: delivered %d, lost %d, duplicates %d" % (
            w.label, len(set(got)), len(lost), len(dup)))
        if lost:
            problems.append("%s subscriber lost %d acknowledged messages: %r" % (
                w.label, len(lost), lost[:10]))
        if dup:
            problems.append("%s subscriber got %d messages twice: %r" % (
                w.label, len(dup), dup[:10]))
    print("\ncut: " + "; ".join(lines))
    assert len(pub.acked) > 1000, "too few messages to tell: %r" % lines
    assert not problems, "\n".join(problems)
