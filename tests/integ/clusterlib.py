"""A shoal cluster on loopback for the integration tests: N nodes that share one redis-server.

    cl = Cluster(broker_factory, redis, n=3)     # node1, node2, node3, started in order
    cl.wait_formed()                             # every node routes to every other node
    cl.nodes[1]                                  # node2, a conftest.Broker
    cl.kill(1, signal.SIGKILL); cl.restart(1)
    cl.add_node()                                # node4, seeded with node1

Each node gets its own `node_id nodeK`, the Redis store, a `cluster_listener` on a free port,
and (except node1) `cluster_seeds` pointing at node1, on top of the MQTT listener and the
`allow_anonymous true` line that conftest.Broker writes. The brokers belong to broker_factory,
which stops and checks them at teardown (a crash or a sanitizer report fails the test).

wait_formed() knows nothing of the cluster's internals: it proves with real MQTT traffic that a
message published on any node reaches a subscriber on any other node.
"""

import time

import conftest
import helpers

PROBE_INTERVAL = 0.1  # seconds between two rounds of probe publishes


class Cluster:
    """Nodes of one cluster. nodes: the members (Broker objects, node K at index K-1);
    outsiders: nodes started by add_node(member=False), which are meant to be refused."""

    def __init__(self, broker_factory, redis, n=3, extra=()):
        """Starts n member nodes one after the other. extra: config lines for every node
        (e.g. cluster_secret_file), added to each node's own lines."""
        self.factory = broker_factory
        self.redis = redis
        self.extra = list(extra)
        self.nodes = []
        self.outsiders = []
        self.cluster_ports = {}  # Broker name -> cluster listener port
        for _ in range(n):
            self.add_node()

    # nodes ----------------------------------------------------------------------------------

    def cluster_port(self, node):
        return self.cluster_ports[node.name]

    def seed(self, node):
        """The HOST:PORT at which node's cluster listener is reached."""
        return "127.0.0.1:%d" % self.cluster_port(node)

    def add_node(self, extra=None, seeds=None, store=None, node_id=None, member=True,
                 start=True):
        """Starts one more node and returns it.

        extra: config lines replacing the cluster-wide ones given to the constructor.
        seeds: list of Brokers (or "HOST:PORT" strings) for cluster_seeds; default node1
        (none for node1 itself). store: the store URL, default the shared Redis.
        member=False keeps the node out of self.nodes (wait_formed ignores it)."""
        if node_id is None:
            node_id = ("node%d" % (len(self.nodes) + 1) if member
                       else "outsider%d" % (len(self.outsiders) + 1))
        if seeds is None:
            seeds = self.nodes[:1]
        port = conftest.free_port()
        lines = ["node_id %s" % node_id,
                 "store %s" % (store or self.redis.url),
                 "cluster_listener %d 127.0.0.1" % port]
        seed_list = [s if isinstance(s, str) else self.seed(s) for s in seeds]
        if seed_list:
            lines.append("cluster_seeds %s" % ",".join(seed_list))
        lines += self.extra if extra is None else list(extra)
        node = self.factory(lines, start=False)
        node.node_id = node_id
        self.cluster_ports[node.name] = port
        (self.nodes if member else self.outsiders).append(node)
        if start:
            node.start()
        return node

    def live(self):
        """The member nodes whose process is running."""
        return [n for n in self.nodes if n.alive()]

    def kill(self, i, sig):
        """Sends sig to member i (0-based) and waits for it to exit (SIGTERM: within
        conftest's STOP_TIMEOUT, or the test fails at teardown)."""
        self.nodes[i].stop(sig)

    def restart(self, i):
        """Starts member i again with the same config, ports and node_id (a new incarnation).
        A running node is stopped with SIGTERM first."""
        return self.nodes[i].restart()

    # readiness ------------------------------------------------------------------------------

    def wait_formed(self, timeout=15.0, nodes=None):
        """Returns once, for every ordered pair (a, b) of distinct live members (or of nodes),
        a QoS 0 message published on a reached a subscriber on b. Fails naming the pairs that
        did not get through within timeout."""
        nodes = self.live() if nodes is None else list(nodes)
        for n in nodes:
            if not n.alive():
                raise AssertionError("%s is not running; stderr:\n%s"
                                     % (_label(n), n.stderr()))
        pairs = [(a, b) for a in nodes for b in nodes if a is not b]
        return self.probe(pairs, timeout)

    def sync_routes(self, timeout=5.0):
        """Waits until the subscriptions made so far on the live members are known to every
        member. A node's route changes reach a peer in order, so a probe subscribed after
        them that gets through from every other node proves that they got through too."""
        return self.wait_formed(timeout)

    def probe(self, pairs, timeout=15.0):
        """For each (a, b): subscribe on b to a topic of the pair's own, then publish to it on
        a every PROBE_INTERVAL until b receives it. Returns the seconds it took."""
        t0 = time.monotonic()
        token = helpers.unique("wf")
        subs, pubs, made = {}, {}, []
        try:
            for a, b in pairs:
                for table, node, tag in ((subs, b, "s"), (pubs, a, "p")):
                    if id(node) not in table:
                        c = helpers.Client(node, helpers.unique("wf" + tag))
                        made.append(c)
                        table[id(node)] = c.connect()
            topics = {}
            for a, b in pairs:
                topic = "probe/%s/%s/%s" % (token, _label(a), _label(b))
                subs[id(b)].subscribe(topic, qos=0)
                topics[topic] = (a, b)
            pending = set(topics)
            deadline = t0 + timeout
            while pending:
                for topic in sorted(pending):
                    a, _ = topics[topic]
                    pubs[id(a)].publish(topic, b"probe", qos=0)
                time.sleep(PROBE_INTERVAL)
                for c in subs.values():
                    for m in c.drain(0):
                        pending.discard(m.topic)
                if pending and time.monotonic() > deadline:
                    raise AssertionError(
                        "cluster not formed after %.1fs: no delivery %s" % (
                            timeout, ", ".join("from %s to %s" % tuple(
                                _label(n) for n in topics[t]) for t in sorted(pending))))
            return time.monotonic() - t0
        finally:
            for c in made:
                c.close()


def _label(node):
    return getattr(node, "node_id", node.name)
