"""The life of the Helm chart's Deployment, played on loopback with the shoal.conf the chart
renders: three nodes and Redis; scale to four, back to three with a SIGTERM drain; then roll
every node, one new node up before an old one drains. Persistent QoS 1 publishers and
subscribers run throughout and reconnect, like clients behind the chart's Service, to a node
in service. No acknowledged message may be lost, no PUBACK may wait for a drained node's
death to be declared, and every drain must end on its own, exit 0, and send its clients to the
remaining nodes.

On loopback each node gets its own ports and node id (a pod's name), the Redis URL of the
test's server, and no cluster_dns: the member registry in Redis finds the nodes instead of the
headless Service's DNS records. Every other line is the chart's."""

import collections
import os
import random
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

import conftest
import helpers
import rawmqtt as R
from test_redis import resume

sys.path.insert(0, os.path.join(conftest.SRC, "tests", "helm"))
import chartlib  # noqa: E402

DRAIN_WAIT = 25.0  # the drain bound is 20 s
READY_WAIT = 20.0


def _loopback_conf(text, node, http_port, cluster_port, redis_url, node_id, workdir):
    """The chart's shoal.conf with this node's ports, id and store; file paths point at files
    in workdir with the same roles."""
    out = ["node_id %s" % node_id]
    ports = iter(node.ports)
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        key = words[0]
        if key == "listener":
            out.append("listener %d 127.0.0.1" % next(ports))
        elif key == "cluster_listener":
            out.append("cluster_listener %d 127.0.0.1" % cluster_port)
        elif key == "cluster_advertise":
            out.append("cluster_advertise 127.0.0.1:%d" % cluster_port)
        elif key == "http_listener":
            out.append("http_listener %d 127.0.0.1" % http_port)
        elif key == "store":
            out.append("store %s" % redis_url)
        elif key in ("cluster_dns", "node_id"):
            continue
        elif key == "include_dir":
            # What the pod writes there before it starts: its own address.
            d = os.path.join(workdir, node_id + ".conf.d")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "node.conf"), "w") as f:
                f.write("cluster_advertise 127.0.0.1:%d\n" % cluster_port)
            out.append("include_dir %s" % d)
        elif key == "cluster_secret_file":
            path = os.path.join(workdir, "cluster-secret")
            if not os.path.exists(path):
                with open(path, "w") as f:
                    f.write("lifecycle-test-secret\n")
            out.append("cluster_secret_file %s" % path)
        else:
            out.append(line.strip())
    return "\n".join(out) + "\n"


def log_of(node):
    """The node's log: the chart sends it to stdout."""
    with open(node.stdout_path, "rb") as f:
        return f.read().decode("utf-8", "replace") + node.stderr()


class Fleet:
    """The Deployment's pods: nodes started from the rendered config, and the set the client
    Service sends new connections to."""

    def __init__(self, factory, redis, conf_text, workdir):
        self.factory, self.redis, self.text, self.workdir = factory, redis, conf_text, workdir
        self.n_listeners = sum(1 for l in conf_text.splitlines() if l.startswith("listener "))
        self.nodes = []
        self.in_service = []
        self.lock = threading.Lock()
        self.count = 0

    def add(self):
        self.count += 1
        node_id = "shoal-%d-%s" % (self.count, helpers.unique("pod")[-6:])
        node = self.factory(start=False, raw_config="", listeners=self.n_listeners)
        node.node_id = node_id
        node.http_port = conftest.free_port()
        with open(node.config, "w") as f:
            f.write(_loopback_conf(self.text, node, node.http_port, conftest.free_port(),
                                   self.redis.url, node_id, self.workdir))
        node.start()
        self.wait_ready(node)
        self.nodes.append(node)
        with self.lock:
            self.in_service.append(node)
        return node

    @staticmethod
    def readyz(node):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % node.http_port,
                                        timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def wait_ready(self, node):
        deadline = time.monotonic() + READY_WAIT
        while time.monotonic() < deadline:
            if self.readyz(node) == 200:
                return
            time.sleep(0.05)
        raise AssertionError("%s never ready (readyz %r); log:\n%s" % (
            node.node_id, self.readyz(node), log_of(node)[-3000:]))

    def pick(self, avoid=None):
        with self.lock:
            live = [n for n in self.in_service if n is not avoid] or list(self.in_service)
        return random.choice(live)

    def drain(self, node):
        """Takes node out of the Service, sends SIGTERM, and waits for it to exit."""
        with self.lock:
            self.in_service.remove(node)
        assert self.readyz(node) == 200
        t0 = time.monotonic()
        node.signal(signal.SIGTERM)
        # Not ready any more as soon as the drain starts.
        saw_503 = False
        while node.proc.poll() is None and time.monotonic() - t0 < DRAIN_WAIT:
            saw_503 = saw_503 or self.readyz(node) == 503
            time.sleep(0.02)
        assert node.proc.poll() is not None, "%s did not exit within %.0f s of SIGTERM" % (
            node.node_id, DRAIN_WAIT)
        took = time.monotonic() - t0
        rc = node.stop()
        assert rc == 0, "%s exited %r; stderr:\n%s" % (node.node_id, rc, node.stderr())
        text = log_of(node)
        assert "drained in" in text and "bound reached" not in text, text
        self.nodes.remove(node)
        return took, saw_503


class Publisher(threading.Thread):
    """Publishes "TAG-SEQ" at QoS 1, one at a time, to life/TAG. When its node goes away it
    connects to another node in service and sends the unacknowledged message again."""

    def __init__(self, fleet, tag, version, node=None):
        super().__init__(daemon=True)
        self.fleet, self.tag, self.version = fleet, tag, version
        self.client_id = helpers.unique(tag)
        self.acked = []
        self.max_wait = 0.0
        self.nodes = []
        self.failure = None
        self.halt = threading.Event()
        self.conn = self._connect(node or fleet.pick())

    def _connect(self, node):
        c = node.raw(self.version)
        assert c.connect(self.client_id, version=self.version).rc == 0
        self.nodes.append(node)
        return c

    def _reconnect(self):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                return self._connect(self.fleet.pick(avoid=self.nodes[-1]))
            except (R.Closed, OSError, AssertionError):
                time.sleep(0.05)
        raise AssertionError("%s could not reconnect" % self.client_id)

    def run(self):
        seq, pid, dup = 1, 1, False
        try:
            while not self.halt.is_set():
                body = ("%s-%d" % (self.tag, seq)).encode()
                try:
                    t0 = time.monotonic()
                    self.conn.send(R.publish("life/" + self.tag, body, qos=1, pid=pid,
                                             dup=dup, version=self.version))
                    ack = self.conn.expect(R.PUBACK, timeout=10)
                    self.max_wait = max(self.max_wait, time.monotonic() - t0)
                except (R.Closed, OSError, AssertionError):
                    self.conn.close()
                    self.conn = self._reconnect()
                    dup = True
                    continue
                dup = False
                if ack.pid == pid and ack.rc == 0:
                    self.acked.append(seq)
                    seq += 1
                pid = pid % 65535 + 1
                self.halt.wait(0.004)
        except Exception as e:  # reported by the test
            self.failure = e
        finally:
            self.conn.close()


class Subscriber(threading.Thread):
    """A persistent QoS 1 subscriber to life/#; when its node goes away it resumes its session
    on another node in service. Records every payload and acknowledges it."""

    def __init__(self, fleet, version, node=None):
        super().__init__(daemon=True)
        self.fleet, self.version = fleet, version
        self.client_id = helpers.unique("lsub")
        self.got = []
        self.nodes = []
        self.moves = 0
        self.failure = None
        self.halt = threading.Event()
        node = node or fleet.pick()
        self.conn = resume(node, self.client_id, version, expect_present=False)
        self.nodes.append(node)
        assert self.conn.subscribe([("life/#", 1)]).codes in ([1], [0x01])

    def _reconnect(self):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            node = self.fleet.pick(avoid=self.nodes[-1])
            try:
                c = resume(node, self.client_id, self.version)
            except (R.Closed, OSError, AssertionError):
                time.sleep(0.05)
                continue
            self.nodes.append(node)
            self.moves += 1
            return c
        raise AssertionError("%s could not resume its session" % self.client_id)

    def run(self):
        try:
            while not self.halt.is_set():
                try:
                    p = self.conn.try_recv(0.05)
                    if p is None:
                        continue
                    if p.type == R.PUBLISH:
                        self.got.append(p.payload.decode())
                        if p.qos == 1:
                            self.conn.send(R.puback(p.pid, version=self.version))
                    elif p.type == R.DISCONNECT:
                        raise R.Closed("DISCONNECT 0x%02x" % p.rc)
                except (R.Closed, OSError):
                    self.conn.close()
                    self.conn = self._reconnect()
        except Exception as e:  # reported by the test
            self.failure = e
        finally:
            self.conn.close()


@pytest.fixture
def chart_conf():
    return chartlib.shoal_conf(chartlib.render())


def test_scale_up_down_and_roll_the_deployment_under_load(redis, broker_factory, chart_conf,
                                                           tmp_path):
    # redis comes first so that it outlives the nodes at teardown.
    fleet = Fleet(broker_factory, redis, chart_conf, str(tmp_path))
    for _ in range(3):
        fleet.add()
    first = list(fleet.nodes)
    subs = [Subscriber(fleet, (4, 5)[i % 2], node=first[i % 3]) for i in range(6)]
    pubs = [Publisher(fleet, "p%d" % i, (4, 5)[i % 2], node=first[i % 3]) for i in range(3)]
    for t in subs + pubs:
        t.start()
    time.sleep(1.0)

    # Scale to four: the new pod gets new clients too (the Service spreads them).
    n4 = fleet.add()
    late = [Subscriber(fleet, 5, node=n4), Subscriber(fleet, 4, node=n4)]
    # They owe nothing published before they subscribed (the one in flight then aside).
    for sb in late:
        sb.since = {pb.tag: (pb.acked[-1] if pb.acked else 0) + 1 for pb in pubs}
    late_pub = Publisher(fleet, "p3", 5, node=n4)
    for t in late + [late_pub]:
        t.start()
    subs += late
    pubs.append(late_pub)
    time.sleep(1.0)
    drains = [("scale down", fleet.drain(n4))]

    # Roll: a new pod first, then an old one drains (maxSurge 1, maxUnavailable 0).
    for old in first:
        fleet.add()
        time.sleep(0.5)
        drains.append(("roll", fleet.drain(old)))
    time.sleep(1.0)

    for pb in pubs:
        pb.halt.set()
    for pb in pubs:
        pb.join(15)
        assert not pb.is_alive(), "publisher %s hung" % pb.tag
        assert pb.failure is None, "publisher %s failed: %r" % (pb.tag, pb.failure)
    want = {"%s-%d" % (pb.tag, s) for pb in pubs for s in pb.acked}
    assert len(want) > 500, "too little load: %d acknowledged" % len(want)

    # Until every subscriber has everything, or nothing more arrived for 3 s.
    deadline, last, idle_since = time.monotonic() + 20, -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - idle_since < 3:
        n = sum(len(sb.got) for sb in subs)
        if n != last:
            last, idle_since = n, time.monotonic()
        if all(want <= set(sb.got) for sb in subs):
            break
        time.sleep(0.1)
    time.sleep(0.5)
    for sb in subs:
        sb.halt.set()
    for sb in subs:
        sb.join(10)
    live = set(id(n) for n in fleet.nodes)
    report = []
    lost = []
    for sb in subs:
        assert sb.failure is None, "%s: %r" % (sb.client_id, sb.failure)
        since = getattr(sb, "since", {})
        missing = {x for x in want - set(sb.got)
                   if int(x.rsplit("-", 1)[1]) > since.get(x.rsplit("-", 1)[0], 0)}
        spans = {}
        for x in missing:
            tag, seq = x.rsplit("-", 1)
            lo, hi, k = spans.get(tag, (int(seq), int(seq), 0))
            spans[tag] = (min(lo, int(seq)), max(hi, int(seq)), k + 1)
        assert not missing, \
            "%s (nodes %r): %d of %d acknowledged messages lost: %r" % (
                sb.client_id, [n.node_id for n in sb.nodes], len(missing), len(want), spans)
        lost.append(len(missing))
        # Each publisher's messages arrive in its order (a resent copy aside).
        for pb in pubs:
            seqs = [int(x.rsplit("-", 1)[1]) for x in sb.got if x.startswith(pb.tag + "-")]
            firsts = [q for i, q in enumerate(seqs) if q not in seqs[:i]]
            assert firsts == sorted(firsts), "%s: %s out of order" % (sb.client_id, pb.tag)
        assert id(sb.nodes[-1]) in live, "%s ended on a drained node" % sb.client_id
        dups = sum(collections.Counter(sb.got).values()) - len(set(sb.got))
        report.append((sb.moves, dups))
    for pb in pubs:
        assert id(pb.nodes[-1]) in live, "publisher %s ended on a drained node" % pb.tag
        # A drained node's routes go before it does: no PUBACK waits for it to be declared
        # dead (about 5 s).
        assert pb.max_wait < 3.0, "publisher %s waited %.2f s for a PUBACK" % (pb.tag,
                                                                              pb.max_wait)
    # Every client of a drained node moved: the first three nodes are all gone.
    assert all(sb.moves >= 1 for sb in subs), [sb.moves for sb in subs]
    for what, (took, saw_503) in drains:
        assert saw_503 or took < 0.1, "%s: /readyz stayed 200 while draining" % what
    print("longest PUBACK wait per publisher (s): %r" % [round(pb.max_wait, 3) for pb in pubs])
    print("acknowledged %d; lost per subscriber %r; per subscriber (moves, copies): %r; "
          "drains (s): %r" % (len(want), lost, report, [(w, round(t, 2)) for w, (t, _) in drains]))
    for n in fleet.nodes:
        text = log_of(n)
        assert not re.search(r"sessions not taken over", text), text
