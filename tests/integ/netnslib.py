"""Network namespaces for partition tests: each cluster node in a namespace of its own, all of
them on one bridge, so that the links between nodes can be cut and healed while the test
process (in the root namespace) and Redis still reach every node.

    net = Net(3).up()                 # fails with NetError if namespaces cannot be made
    net.addr(0)                       # node1's address, e.g. "127.93.17.11"
    net.prefix(0)                     # ["ip", "netns", "exec", "<node1's namespace>"]
    net.cut([2], [0, 1])              # node3 <-> node1 and node3 <-> node2, both directions
    net.heal()                        # every cut is undone
    net.down()                        # everything made by up() is removed

Layout (RUN is "shoalpart-PID-K": the test process's pid and a counter, so that runs and
tests never share a name; interface names are limited to 15 characters, hence spPID_K):

    root namespace        hub namespace (RUN-hub)        node namespace (RUN-nodeI)
    spPID_K 127.A.B.1 -- root -+- bridge br0 -+- nI ----- eth0 127.A.B.(10+I)

Every address is in the loopback range 127.0.0.0/8, on a /24 of the run's own that no route
or address of the machine uses. Linux drops 127/8 on any device but lo unless route_localnet
is set, and every namespace's local routing table sends all of 127.0.0.0/8 to lo; so the
root-side veth and each node's eth0 get route_localnet=1 (node namespaces set it for `all`
too), and a /24 route to the device in the local table, more specific than 127.0.0.0/8, takes
the run's addresses off lo. The root namespace keeps its own lo and 127.0.0.1 untouched.

A cut is a blackhole route for the other node's /32, in the local table (the one looked up
first) of both namespaces: packets between the two vanish without an answer, as behind a dead
switch port. Established links go silent, and new connections fail at once (EINVAL). Traffic
between the nodes and the root namespace (test clients, Redis) is never cut.
"""

import os
import random
import re
import subprocess
import threading
import time

import conftest
import clusterlib

_counter = 0
_counter_lock = threading.Lock()
NAME_RE = re.compile(r"^shoalpart-(\d+)-\d+-(hub|node\d+)$")
LINK_RE = re.compile(r"^sp(\d+)_\d+$")


class NetError(Exception):
    """A namespace, link, address or route could not be set up."""


def ip(*args, check=True):
    """Runs `ip ARGS`; raises NetError with its stderr when check and it fails."""
    r = subprocess.run(["ip"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=10)
    if check and r.returncode != 0:
        raise NetError("`ip %s` failed (%d): %s" % (" ".join(map(str, args)), r.returncode,
                                                    r.stderr.strip()))
    return r


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale():
    """Removes namespaces and root-side links that a run of these tests left behind when its
    process died (its pid no longer exists). Nothing of a live run is touched."""
    r = ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NAME_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            ip("netns", "del", name, check=False)
    r = ip("-o", "link", "show", check=False)
    for line in r.stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = LINK_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            ip("link", "del", name, check=False)


def _subnet_in_use(a, b):
    """True if 127.a.b.0/24 appears in any route or address of the root namespace."""
    net = "127.%d.%d." % (a, b)
    for cmd in (("-4", "route", "show", "table", "all"), ("-4", "-o", "addr", "show")):
        if net in ip(*cmd, check=False).stdout:
            return True
    return False


class Net:
    """n node namespaces on one bridge, reachable from the root namespace. See the module
    docstring for the layout. Nodes are numbered from 0 (node1 is 0)."""

    def __init__(self, n=3):
        global _counter
        with _counter_lock:
            _counter += 1
            k = _counter
        self.n = n
        self.pid = os.getpid()
        self.k = k
        self.run = "shoalpart-%d-%d" % (self.pid, k)
        self.hub = self.run + "-hub"
        self.nodes = ["%s-node%d" % (self.run, i + 1) for i in range(n)]
        self.root_link = "sp%d_%d" % (self.pid, k)
        self.made_ns = []
        self.made_root_link = False
        self.cuts = set()  # (i, j) with i < j
        self.subnet = None

    # addresses ------------------------------------------------------------------------------

    def _pick_subnet(self):
        rnd = random.Random(self.pid * 1000 + self.k)
        for _ in range(200):
            a, b = rnd.randint(64, 254), rnd.randint(0, 255)
            if not _subnet_in_use(a, b):
                return "127.%d.%d" % (a, b)
        raise NetError("no free 127.x.y.0/24 found for the test network")

    @property
    def root_addr(self):
        """The root namespace's address on the test network (Redis binds it)."""
        return self.subnet + ".1"

    def addr(self, i):
        """Node i's address (node1 is i = 0)."""
        return "%s.%d" % (self.subnet, 11 + i)

    def prefix(self, i):
        """The command prefix that runs a program in node i's namespace."""
        return ["ip", "netns", "exec", self.nodes[i]]

    # set-up and tear-down ---------------------------------------------------------------------

    def _add_ns(self, name):
        r = ip("netns", "add", name, check=False)
        if r.returncode != 0:
            raise NetError("cannot create network namespace %s (`ip netns add` exited %d: %s); "
                           "these tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
                           % (name, r.returncode, r.stderr.strip()))
        self.made_ns.append(name)

    def _sysctl(self, ns, key, value):
        cmd = (["ip", "netns", "exec", ns] if ns else []) + ["sysctl", "-qw",
                                                             "%s=%s" % (key, value)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise NetError("`%s` failed: %s" % (" ".join(cmd), r.stderr.strip()))

    def up(self):
        """Creates the namespaces, bridge, links, addresses and routes. Returns self. On any
        failure, removes what it made and raises NetError."""
        try:
            remove_stale()
            self.subnet = self._pick_subnet()
            self._add_ns(self.hub)
            ip("-n", self.hub, "link", "set", "lo", "up")
            ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            ip("-n", self.hub, "link", "set", "br0", "up")
            for i, ns in enumerate(self.nodes):
                self._add_ns(ns)
                port = "n%d" % (i + 1)
                ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                   "netns", ns)
                ip("-n", self.hub, "link", "set", "dev", port, "master", "br0", "up")
                self._sysctl(ns, "net.ipv4.conf.all.route_localnet", 1)
                self._sysctl(ns, "net.ipv4.conf.eth0.route_localnet", 1)
                ip("-n", ns, "link", "set", "lo", "up")
                ip("-n", ns, "addr", "add", self.addr(i) + "/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
                ip("-n", ns, "route", "add", self.subnet + ".0/24", "dev", "eth0", "table",
                   "local")
            ip("link", "add", self.root_link, "type", "veth", "peer", "name", "root", "netns",
               self.hub)
            self.made_root_link = True
            ip("-n", self.hub, "link", "set", "dev", "root", "master", "br0", "up")
            self._sysctl(None, "net.ipv4.conf.%s.route_localnet" % self.root_link, 1)
            ip("addr", "add", self.root_addr + "/24", "dev", self.root_link)
            ip("link", "set", self.root_link, "up")
            ip("route", "add", self.subnet + ".0/24", "dev", self.root_link, "table", "local")
            self._wait_reachable()
        except Exception:
            self.down()
            raise
        return self

    def _wait_reachable(self, timeout=5.0):
        """Waits until every node address answers from the root namespace (a refused TCP
        connection is an answer: the path works, nothing listens yet)."""
        import socket
        deadline = time.monotonic() + timeout
        pending = set(range(self.n))
        while pending:
            for i in sorted(pending):
                s = socket.socket()
                s.settimeout(0.3)
                try:
                    s.connect((self.addr(i), 9))
                    pending.discard(i)
                except ConnectionRefusedError:
                    pending.discard(i)
                except OSError:
                    pass
                finally:
                    s.close()
            if pending and time.monotonic() > deadline:
                raise NetError("node addresses %s not reachable from the root namespace "
                               "within %.0fs" % ([self.addr(i) for i in sorted(pending)],
                                                 timeout))
            if pending:
                time.sleep(0.1)

    def down(self):
        """Removes every namespace and the root-side link this Net made (the bridge and the
        veths go with them). Raises NetError naming what could not be removed."""
        errors = []
        for ns in reversed(self.made_ns):
            r = ip("netns", "del", ns, check=False)
            if r.returncode != 0:
                errors.append("netns %s: %s" % (ns, r.stderr.strip()))
        self.made_ns = []
        if self.made_root_link:
            # Usually gone with its peer in the hub namespace, which the kernel removes in the
            # background: it may go between the check and the delete, which is as good.
            if ip("link", "show", self.root_link, check=False).returncode == 0:
                r = ip("link", "del", self.root_link, check=False)
                if r.returncode != 0 and ip("link", "show", self.root_link,
                                            check=False).returncode == 0:
                    errors.append("link %s: %s" % (self.root_link, r.stderr.strip()))
            self.made_root_link = False
        self.cuts = set()
        if errors:
            raise NetError("test network not fully removed: " + "; ".join(errors))

    # partitions -------------------------------------------------------------------------------

    def _blackhole(self, verb, i, j):
        ip("-n", self.nodes[i], "route", verb, "blackhole", self.addr(j) + "/32", "table",
           "local")

    def cut(self, side_a, side_b):
        """Cuts every node of side_a from every node of side_b, both directions."""
        for i in side_a:
            for j in side_b:
                if i == j:
                    raise ValueError("a node cannot be cut from itself")
                key = (min(i, j), max(i, j))
                if key in self.cuts:
                    continue
                self._blackhole("add", i, j)
                self._blackhole("add", j, i)
                self.cuts.add(key)

    def isolate(self, i):
        """Cuts node i from every other node."""
        self.cut([i], [j for j in range(self.n) if j != i])

    def heal(self):
        """Undoes every cut."""
        for i, j in sorted(self.cuts):
            self._blackhole("del", i, j)
            self._blackhole("del", j, i)
        self.cuts = set()


class NetCluster(clusterlib.Cluster):
    """clusterlib.Cluster whose node K runs in net's namespace K-1, with its MQTT and cluster
    listeners on that namespace's address; node1 is every other node's seed. redis must be
    reachable from the namespaces (bind it to net.root_addr). wait_formed, sync_routes and
    probe work as in clusterlib."""

    def __init__(self, broker_factory, redis, net, n=3, extra=()):
        if n > net.n:
            raise ValueError("%d nodes for %d namespaces" % (n, net.n))
        self.net = net
        super().__init__(broker_factory, redis, n, extra)

    def seed(self, node):
        return "%s:%d" % (node.host, self.cluster_port(node))

    def add_node(self, extra=None, seeds=None, store=None, node_id=None, member=True,
                 start=True):
        if not member or node_id is not None:
            raise ValueError("NetCluster makes member nodes only, named nodeK")
        k = len(self.nodes)
        node_id = "node%d" % (k + 1)
        if seeds is None:
            seeds = self.nodes[:1]
        port = conftest.free_port()
        addr = self.net.addr(k)
        lines = ["node_id %s" % node_id,
                 "store %s" % (store or self.redis.url),
                 "cluster_listener %d %s" % (port, addr)]
        seed_list = [s if isinstance(s, str) else self.seed(s) for s in seeds]
        if seed_list:
            lines.append("cluster_seeds %s" % ",".join(seed_list))
        lines += self.extra if extra is None else list(extra)
        node = self.factory(lines, start=False, host=addr, prefix=self.net.prefix(k))
        node.node_id = node_id
        self.cluster_ports[node.name] = port
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def index(self, node_id):
        return [n.node_id for n in self.nodes].index(node_id)


class LogWatch:
    """Reads a broker's stderr file from the point where it was made, for lines the node logs
    about its members ("member cut off peer=nodeK", "member joined peer=nodeK")."""

    def __init__(self, node):
        self.node = node
        try:
            self.offset = os.path.getsize(node.stderr_path)
        except OSError:
            self.offset = 0

    def text(self):
        try:
            with open(self.node.stderr_path, "rb") as f:
                f.seek(self.offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def seen(self, needle):
        return needle in self.text()


def wait_logged(watches, timeout, what):
    """watches: list of (LogWatch, needle). Waits until every needle has been logged since its
    watch began; returns the seconds it took. Fails naming the nodes that did not log it."""
    t0 = time.monotonic()
    pending = list(watches)
    while pending:
        pending = [(w, s) for w, s in pending if not w.seen(s)]
        if not pending:
            break
        if time.monotonic() - t0 > timeout:
            raise AssertionError("%s: not logged within %.0fs: %s" % (
                what, timeout, ", ".join("%s %r" % (w.node.node_id, s) for w, s in pending)))
        time.sleep(0.1)
    return time.monotonic() - t0


def declared_dead(cluster, watches, a_ids, b_ids, timeout=20.0):
    """Waits until every node of a_ids has logged every node of b_ids cut off, and the
    reverse: unreachable while the member registry in Redis lists it alive, the way a node
    sees the other side of a partition. watches: node_id -> LogWatch begun at the cut."""
    needles = []
    for x in a_ids:
        for y in b_ids:
            needles.append((watches[x], "member cut off peer=%s" % y))
            needles.append((watches[y], "member cut off peer=%s" % x))
    return wait_logged(needles, timeout, "partition not detected")
