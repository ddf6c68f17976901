"""The HTTP endpoint (http_listener): /metrics in the Prometheus text format 0.0.4, read by a
strict parser written here; exact counter deltas for real MQTT traffic; /healthz and /readyz
(the store going away and coming back, a cluster forming); and the listener's defences
(malformed and oversized requests, the connection cap) leaving the node unharmed."""

import http.client
import math
import re
import signal
import socket
import subprocess
import time

import pytest

import conftest
import helpers
import rawmqtt

pytestmark = pytest.mark.skipif(conftest.IMPL != "shoal", reason="shoal's own endpoint")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
HTTP_MAX_CONNS = 64  # node/http.c


# ---- an HTTP node and its requests ----------------------------------------------------------

def http_node(broker_factory, extra=(), **kw):
    port = conftest.free_port()
    b = broker_factory(list(extra) + ["http_listener %d 127.0.0.1" % port], **kw)
    b.http_port = port
    return b


def request(b, path, method="GET", body=None, headers=None):
    """(status, headers dict with lower-case names, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", b.http_port, timeout=5)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def raw_request(b, data, timeout=5.0):
    """Sends raw bytes and returns everything the node answers until it closes."""
    s = socket.create_connection(("127.0.0.1", b.http_port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def status_of(raw):
    assert raw.startswith(b"HTTP/1.1 "), raw[:80]
    return int(raw[9:12])


# ---- a strict Prometheus text-format parser -------------------------------------------------

def parse_value(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", s), "bad value %r" % s
    return float(s)


def parse_labels(s, pos, line):
    """Parses {a="x",b="y"} starting at s[pos] == "{". Returns (dict, position after "}")."""
    labels = {}
    pos += 1
    while s[pos] != "}":
        m = LABEL_RE.match(s, pos)
        assert m, "bad label name in %r" % line
        name = m.group(0)
        assert not name.startswith("__"), "reserved label name in %r" % line
        pos = m.end()
        assert s[pos:pos + 2] == '="', "bad label in %r" % line
        pos += 2
        val = []
        while s[pos] != '"':
            ch = s[pos]
            assert ch != "\n"
            if ch == "\\":
                nxt = s[pos + 1]
                assert nxt in '\\"n', "bad escape in %r" % line
                val.append("\n" if nxt == "n" else nxt)
                pos += 2
            else:
                val.append(ch)
                pos += 1
        pos += 1
        assert name not in labels, "label %s twice in %r" % (name, line)
        labels[name] = "".join(val)
        if s[pos] == ",":
            pos += 1
        else:
            assert s[pos] == "}", "bad label list in %r" % line
    return labels, pos + 1


def family_of(name, fam, typ):
    """The sample name's suffix within its family (None when it does not belong)."""
    if typ == "histogram":
        for suffix in ("_bucket", "_sum", "_count"):
            if name == fam + suffix:
                return suffix
        return None
    return "" if name == fam else None


class Metrics:
    """A parsed scrape: families {name: type} and samples {(name, frozenset(labels)): value}."""

    def __init__(self, text):
        self.types = {}
        self.help = {}
        self.samples = {}
        self._parse(text)
        self._check_histograms()

    def _parse(self, text):
        assert text.endswith("\n"), "the exposition must end with a newline"
        current = None
        for line in text[:-1].split("\n"):
            assert line, "empty line"
            if line.startswith("# HELP "):
                name, sep, doc = line[7:].partition(" ")
                assert sep and doc, "HELP without text: %r" % line
                assert NAME_RE.match(name) and name.startswith("shoal_"), name
                assert name not in self.help, "family %s declared twice" % name
                self.help[name] = doc
                current = name
            elif line.startswith("# TYPE "):
                name, typ = line[7:].split(" ")
                assert name == current and name not in self.types, line
                assert typ in ("counter", "gauge", "histogram"), line
                if typ == "counter":
                    assert name.endswith("_total"), "counter %s must end in _total" % name
                else:
                    assert not name.endswith("_total"), "only counters end in _total: %s" % name
                self.types[name] = typ
            else:
                assert not line.startswith("#"), "stray comment %r" % line
                self._sample(line, current)

    def _sample(self, line, current):
        m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        assert m, "bad sample %r" % line
        name = m.group(0)
        pos = m.end()
        labels = {}
        if line[pos] == "{":
            labels, pos = parse_labels(line, pos, line)
        assert line[pos] == " ", "bad sample %r" % line
        rest = line[pos + 1:].split(" ")
        assert len(rest) == 1, "unexpected timestamp or junk in %r" % line
        value = parse_value(rest[0])
        # Every sample follows the HELP and TYPE of its own family.
        assert current is not None and current in self.types, "sample before TYPE: %r" % line
        typ = self.types[current]
        suffix = family_of(name, current, typ)
        assert suffix is not None, "%s is not in family %s" % (name, current)
        if suffix == "_bucket":
            assert "le" in labels, line
        if typ == "counter" or suffix in ("_bucket", "_count", "_sum"):
            assert value >= 0 and not math.isnan(value), "negative counter %r" % line
        key = (name, frozenset(labels.items()))
        assert key not in self.samples, "duplicate series %r" % line
        self.samples[key] = value

    def _check_histograms(self):
        for fam, typ in self.types.items():
            if typ != "histogram":
                continue
            groups = {}
            for (name, labels), v in self.samples.items():
                if name == fam + "_bucket":
                    d = dict(labels)
                    le = d.pop("le")
                    groups.setdefault(frozenset(d.items()), []).append((parse_value(le), v))
            assert groups, "histogram %s has no buckets" % fam
            for rest, buckets in groups.items():
                buckets.sort()
                assert buckets[-1][0] == math.inf, "%s: no +Inf bucket" % fam
                counts = [v for _, v in buckets]
                assert counts == sorted(counts), "%s: buckets not cumulative %r" % (fam, buckets)
                assert self.samples[(fam + "_count", rest)] == counts[-1]
                assert self.samples[(fam + "_sum", rest)] >= 0

    def get(self, name, **labels):
        key = (name, frozenset((k, str(v)) for k, v in labels.items()))
        assert key in self.samples, "no sample %s%r" % (name, labels)
        return self.samples[key]

    def has(self, name, **labels):
        return (name, frozenset((k, str(v)) for k, v in labels.items())) in self.samples


def scrape(b):
    status, headers, body = request(b, "/metrics")
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) == len(body)
    return Metrics(body.decode("utf-8"))


def test_parser_refuses_bad_expositions():
    """The parser used below must be able to fail."""
    good = ("# HELP shoal_x_total x.\n# TYPE shoal_x_total counter\nshoal_x_total 1\n")
    Metrics(good)
    bad = [
        "shoal_x_total 1\n",  # no family
        good.replace("counter", "gauge"),  # a gauge named _total
        good.replace(" 1\n", " -1\n"),  # negative counter
        good + "shoal_x_total 2\n",  # duplicate series
        good.replace("shoal_x_total 1", 'shoal_x_total{a="\\q"} 1'),  # bad escape
        good.replace("shoal_x_total 1", "shoal_y_total 1"),  # other family
        "# HELP x_total x.\n# TYPE x_total counter\nx_total 1\n",  # no prefix
        ("# HELP shoal_h h.\n# TYPE shoal_h histogram\nshoal_h_bucket{le=\"1\"} 2\n"
         "shoal_h_bucket{le=\"+Inf\"} 1\nshoal_h_sum 1\nshoal_h_count 1\n"),  # not cumulative
        ("# HELP shoal_h h.\n# TYPE shoal_h histogram\nshoal_h_bucket{le=\"1\"} 1\n"
         "shoal_h_bucket{le=\"+Inf\"} 2\nshoal_h_sum 1\nshoal_h_count 3\n"),  # +Inf != count
    ]
    for text in bad:
        with pytest.raises(AssertionError):
            Metrics(text)


# ---- metrics ------------------------------------------------------------------------------

def passwd_file(tmp_path, user, password):
    path = str(tmp_path / "passwd")
    subprocess.run(["/usr/bin/mosquitto_passwd", "-c", "-b", path, user, password], check=True,
                   capture_output=True)
    return path


def qos_flow_in(c, topic, payload, qos, pid):
    """Publishes from c and completes the QoS flow as the publisher."""
    v = c.version
    c.send(rawmqtt.publish(topic, payload, qos=qos, pid=pid if qos else None, version=v))
    if qos == 1:
        assert c.expect(rawmqtt.PUBACK).pid == pid
    elif qos == 2:
        assert c.expect(rawmqtt.PUBREC).pid == pid
        c.send(rawmqtt.pubrel(pid, version=v))
        assert c.expect(rawmqtt.PUBCOMP).pid == pid


def receive_flow(c, want_qos):
    """Receives one PUBLISH on c and completes its flow as the subscriber."""
    p = c.expect(rawmqtt.PUBLISH)
    assert p.qos == want_qos
    if p.qos == 1:
        c.send(rawmqtt.puback(p.pid, version=c.version))
    elif p.qos == 2:
        c.send(rawmqtt.pubrec(p.pid, version=c.version))
        assert c.expect(rawmqtt.PUBREL).pid == p.pid
        c.send(rawmqtt.pubcomp(p.pid, version=c.version))
    return p


def test_metrics_count_real_traffic(broker_factory, clients, tmp_path):
    pw = passwd_file(tmp_path, "alice", "wonderland")
    b = http_node(broker_factory, ["password_file " + pw, "allow_anonymous true",
                                   "message_size_limit 1000", "sys_interval 0"])
    lst = str(b.port)

    def conns(protocol):
        return m.get("shoal_connections", listener=lst, transport="tcp", protocol=protocol)

    m = m0 = scrape(b)
    assert m.types["shoal_store_request_duration_seconds"] == "histogram"
    assert m.get("shoal_ready") == 1
    assert conns("3.1.1") == 0 and conns("5") == 0 and conns("3.1") == 0

    sub = clients.raw_connected(b, helpers.unique("sub"), version=4)
    assert sub.subscribe([("m/#", 2)]).codes == [2]
    pub = clients.raw_connected(b, helpers.unique("pub"), version=5)
    m = scrape(b)
    assert conns("3.1.1") == 1 and conns("5") == 1 and conns("3.1") == 0
    assert m.get("shoal_listener_sockets", listener=lst, transport="tcp") == 2
    assert m.get("shoal_sessions") == m0.get("shoal_sessions") + 2
    assert m.get("shoal_subscriptions") == m0.get("shoal_subscriptions") + 1

    for qos in (0, 1, 2):
        qos_flow_in(pub, "m/x", b"q%d" % qos, qos, pid=10 + qos)
        assert receive_flow(sub, qos).payload == b"q%d" % qos
    # Over message_size_limit: refused with 0x97, and counted as a drop.
    pub.send(rawmqtt.publish("m/big", b"x" * 2000, qos=1, pid=20, version=5))
    assert pub.expect(rawmqtt.PUBACK).rc == 0x97
    # A wrong password, then a good one.
    bad = clients.raw(b, 4)
    assert bad.connect(helpers.unique("a"), username="alice", password=b"nope").rc == 4
    good = clients.raw(b, 4)
    assert good.connect(helpers.unique("a"), username="alice", password=b"wonderland").rc == 0

    m = scrape(b)

    def delta(name, **labels):
        return m.get(name, **labels) - m0.get(name, **labels)

    for qos in (0, 1, 2):
        assert delta("shoal_messages_received_total", qos=qos) == 1 + (qos == 1)
        assert delta("shoal_messages_sent_total", qos=qos) == 1
    assert delta("shoal_messages_dropped_total", reason="too_large") == 1
    for reason in ("queue_full", "packet_too_large", "slow_consumer", "expired", "other"):
        assert delta("shoal_messages_dropped_total", reason=reason) == 0
    assert delta("shoal_auth_failures_total", reason="bad_credentials") == 1
    for reason in ("anonymous", "certificate", "clientid_prefix", "auth_method"):
        assert delta("shoal_auth_failures_total", reason=reason) == 0
    assert delta("shoal_connects_total") == 3
    assert conns("3.1.1") == 2
    assert delta("shoal_bytes_received_total") > 2000
    assert delta("shoal_bytes_sent_total") > 0
    assert delta("shoal_packets_received_total") >= 12
    assert m.get("shoal_cluster_members") == 0
    assert m.get("shoal_store_up") == 1

    for c in (sub, pub, bad, good):
        c.close()
    helpers.wait_until(lambda: scrape(b).get("shoal_listener_sockets", listener=lst,
                                             transport="tcp") == 0, msg="sockets closed")
    m = scrape(b)
    assert conns("3.1.1") == 0 and conns("5") == 0


def test_metrics_per_listener_and_refusals(broker_factory, clients):
    """Two listeners (one WebSocket), an anonymous refusal, a client id prefix refusal."""
    b = http_node(broker_factory, ["allow_anonymous false", "clientid_prefixes ok-"],
                  listeners=2, listener_opts=[[], ["protocol websockets"]])
    m0 = scrape(b)
    assert m0.has("shoal_connections", listener=b.ports[1], transport="ws", protocol="5")
    c = clients.raw(b, 5)
    assert c.connect("ok-1").rc == 0x87  # anonymous
    m = scrape(b)
    assert m.get("shoal_auth_failures_total", reason="anonymous") == 1
    assert m.get("shoal_auth_failures_total", reason="clientid_prefix") == 0


def test_metrics_clientid_prefix(broker_factory, clients):
    b = http_node(broker_factory, ["clientid_prefixes ok-"])
    c = clients.raw(b, 4)
    assert c.connect("nope-1").rc == 5
    assert clients.raw(b, 4).connect("ok-1").rc == 0
    m = scrape(b)
    assert m.get("shoal_auth_failures_total", reason="clientid_prefix") == 1
    assert m.get("shoal_connections", listener=b.port, transport="tcp", protocol="3.1.1") == 1


# ---- health, errors and limits ------------------------------------------------------------

def test_health_and_errors(broker_factory, clients):
    b = http_node(broker_factory)
    assert request(b, "/healthz")[::2] == (200, b"ok\n")
    assert request(b, "/healthz?verbose=1")[::2] == (200, b"ok\n")
    assert request(b, "/readyz")[::2] == (200, b"ready\n")
    status, headers, body = request(b, "/nope")
    assert status == 404 and int(headers["content-length"]) == len(body)
    assert request(b, "/metrics/x")[0] == 404
    assert request(b, "/" + "m" * 500)[0] == 404
    status, headers, _ = request(b, "/metrics", method="POST", body=b"x=1")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert request(b, "/healthz", method="DELETE")[0] == 405
    # HEAD: the headers of a GET, no body.
    status, headers, body = request(b, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
    assert headers["connection"] == "close"
    # Malformed requests get 400 and hurt nobody.
    for junk in (b"GARBAGE\r\n\r\n", b"\x00\x01\x02\r\n\r\n", b"GET  HTTP/1.1\r\n\r\n",
                 b"GET /healthz HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                 b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n"):
        assert status_of(raw_request(b, junk)) == 400, junk
    assert status_of(raw_request(b, b"GET /metrics HTTP/9.9\r\n\r\n")) == 505
    # Too much: a request head over 8 KiB, a body over 8 KiB.
    big = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
    assert status_of(raw_request(b, big)) == 431
    assert status_of(raw_request(b, b"POST /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")) \
        == 413
    # Split into single bytes, a request still parses.
    s = socket.create_connection(("127.0.0.1", b.http_port), timeout=5)
    for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n":
        s.sendall(bytes([ch]))
    out = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    s.close()
    assert status_of(out) == 200 and out.endswith(b"\r\n\r\nok\n")
    # MQTT is unaffected, and the node still answers.
    c = clients.raw_connected(b, "after-junk")
    assert c.is_open()
    assert request(b, "/healthz")[0] == 200


def test_connection_cap(broker_factory, clients):
    b = http_node(broker_factory)
    idle = [socket.create_connection(("127.0.0.1", b.http_port), timeout=5)
            for _ in range(HTTP_MAX_CONNS)]
    try:
        # Let the node accept every one of them first.
        sub = clients.raw_connected(b, "cap-sub")
        assert sub.subscribe([("cap/#", 0)]).codes == [0]
        time.sleep(0.3)
        out = raw_request(b, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert out == b"" or status_of(out) == 503, out
        # MQTT goes on meanwhile.
        pub = clients.raw_connected(b, "cap-pub")
        pub.publish("cap/x", b"still here")
        assert sub.expect(rawmqtt.PUBLISH).payload == b"still here"
    finally:
        for s in idle:
            s.close()
    helpers.wait_until(lambda: request(b, "/healthz")[0] == 200, msg="slots freed")
    assert request(b, "/metrics")[0] == 200


def test_idle_connection_blocks_nobody(broker_factory):
    b = http_node(broker_factory)
    s = socket.create_connection(("127.0.0.1", b.http_port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\n")  # never finished
    try:
        for _ in range(5):
            assert request(b, "/healthz")[0] == 200
    finally:
        s.close()


def test_http_listener_port_taken(broker_factory):
    """A port the node cannot bind stops it at start with a message naming the port."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        b = broker_factory(["http_listener %d 127.0.0.1" % port], start=False)
        with pytest.raises(AssertionError, match="exited with 1"):
            b.start()
        assert "port=%d" % port in b.stderr()
    finally:
        holder.close()


def test_config_check_accepts_http_listener(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("listener 1883 127.0.0.1\nhttp_listener 9100\n")
    r = subprocess.run([conftest.BIN, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0 and "config ok" in r.stdout, r.stderr
    conf.write_text("listener 9100 127.0.0.1\nhttp_listener 9100\n")
    r = subprocess.run([conftest.BIN, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1 and "http_listener: port 9100 is also an MQTT listener" in r.stderr


# ---- readiness --------------------------------------------------------------------------

def test_readyz_follows_the_store(redis, broker_factory):
    b = http_node(broker_factory, ["store %s" % redis.url])
    helpers.wait_until(lambda: request(b, "/readyz")[0] == 200, msg="ready")
    m = scrape(b)
    assert m.get("shoal_store_up") == 1
    assert m.get("shoal_store_request_duration_seconds_count") > 0
    redis.stop()
    helpers.wait_until(lambda: request(b, "/readyz")[0] == 503, timeout=5, msg="unready")
    assert request(b, "/readyz")[2] == b"store unreachable\n"
    assert request(b, "/healthz")[0] == 200  # alive all the same
    m = scrape(b)
    assert m.get("shoal_store_up") == 0 and m.get("shoal_ready") == 0
    redis.start()
    helpers.wait_until(lambda: request(b, "/readyz")[0] == 200, timeout=10, msg="ready again")
    assert scrape(b).get("shoal_ready") == 1


def test_readyz_in_a_cluster(redis, broker_factory):
    import clusterlib
    cl = clusterlib.Cluster(broker_factory, redis, n=0)
    ports = []
    for _ in range(2):
        port = conftest.free_port()
        seeds = [cl.nodes[0]] if cl.nodes else None
        node = cl.add_node(extra=["http_listener %d 127.0.0.1" % port], seeds=seeds)
        node.http_port = port
        ports.append(port)
    cl.wait_formed()
    n1, n2 = cl.nodes
    for node, peer in ((n1, "node2"), (n2, "node1")):
        helpers.wait_until(lambda: request(node, "/readyz")[0] == 200, msg="joined")
        m = scrape(node)
        assert m.get("shoal_cluster_members") == 1
        assert m.get("shoal_cluster_link_up", peer=peer) == 1
    # A member that goes away: its link is down on the survivor until it is declared dead.
    cl.kill(1, signal.SIGKILL)
    helpers.wait_until(lambda: not scrape(n1).has("shoal_cluster_link_up", peer="node2")
                       or scrape(n1).get("shoal_cluster_link_up", peer="node2") == 0,
                       timeout=10, msg="link down")
