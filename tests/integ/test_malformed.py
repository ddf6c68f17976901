"""Malformed and hostile input over raw sockets. Each case must close only the offending
connection (MQTT 5: after a DISCONNECT with the spec's reason code, or a CONNACK for CONNECT
errors), while a healthy client connected beforehand keeps publishing and receiving and the
broker keeps accepting new clients."""

import resource
import socket
import struct
import time

import pytest

import helpers
import rawmqtt as R


class Healthy:
    def __init__(self, broker, clients):
        self.broker = broker
        self.c = clients.v3(broker)
        self.topic = "health/" + self.c.client_id
        self.c.subscribe(self.topic, qos=1)
        self.n = 0

    def check(self):
        assert self.broker.alive(), "broker died:\n" + self.broker.stderr()
        self.n += 1
        self.c.publish(self.topic, b"%d" % self.n, qos=1)
        assert self.c.expect_message().payload == b"%d" % self.n
        fresh = R.connected(self.broker.host, self.broker.port, helpers.unique("fresh"))
        fresh.close()


@pytest.fixture
def healthy(shared_broker, clients):
    h = Healthy(shared_broker, clients)
    yield h
    h.check()


def rejected(c, v5_codes=None, connack_codes=None, timeout=3):
    """Waits for c to be closed. v5_codes: a DISCONNECT with one of these codes must come
    first. connack_codes: a CONNACK, if sent, must carry one of these codes."""
    seen = c.wait_closed(timeout)
    for p in seen:
        if p.type == R.CONNACK:
            assert p.rc != 0, "CONNACK success before close: %r" % seen
            if connack_codes is not None:
                assert p.rc in connack_codes, "CONNACK rc 0x%02x not in %r" % (
                    p.rc, [hex(x) for x in connack_codes])
    if v5_codes is not None:
        discs = [p for p in seen if p.type == R.DISCONNECT]
        assert discs, "no DISCONNECT before close (expected %r), saw %r" % (
            [hex(x) for x in v5_codes], seen)
        assert discs[0].rc in v5_codes, "DISCONNECT 0x%02x, expected %r" % (
            discs[0].rc, [hex(x) for x in v5_codes])
    return seen


def raw_after_connect(broker, clients, level):
    return clients.raw_connected(broker, version=level)


LEVELS = pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])


# --- before/at CONNECT ----------------------------------------------------------------------

def test_first_packet_not_connect(shared_broker, clients, healthy):
    c = clients.raw(shared_broker)
    c.send(R.publish("mal/x", b"x"))
    rejected(c)
    healthy.check()
    c2 = clients.raw(shared_broker)
    c2.send(R.pingreq())
    rejected(c2)


def test_garbage_first_bytes(shared_broker, clients, healthy):
    c = clients.raw(shared_broker)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rejected(c)
    healthy.check()


def test_bad_protocol_name(shared_broker, clients, healthy):
    for level in (4, 5):
        c = clients.raw(shared_broker, version=level)
        c.send(R.connect(helpers.unique(), version=level, proto_name=b"MQTX"))
        rejected(c, connack_codes=(0x01, 0x84, 0x81, 0x82))
    healthy.check()


def test_bad_protocol_level(shared_broker, clients, healthy):
    c = clients.raw(shared_broker, version=4)
    c.send(R.connect(helpers.unique(), version=4).replace(b"MQTT\x04", b"MQTT\x06", 1))
    seen = rejected(c)
    acks = [p for p in seen if p.type == R.CONNACK]
    assert acks, "expected CONNACK 0x01 (unacceptable protocol version) before close"
    # v3 form [0x20 2 0 1] or v5 form with reason 0x84
    assert acks[0].rc in (0x01, 0x84), acks
    healthy.check()


def test_v5_connect_with_unsupported_level_gets_0x84(shared_broker, clients, healthy):
    """A v5-shaped CONNECT with level 6: CONNACK 0x84 (v5 form) or 0x01 (v3 form)."""
    c = clients.raw(shared_broker, version=5)
    pkt = R.connect(helpers.unique(), version=5)
    c.send(pkt.replace(b"MQTT\x05", b"MQTT\x06", 1))
    seen = rejected(c)
    acks = [p for p in seen if p.type == R.CONNACK]
    assert acks and acks[0].rc in (0x84, 0x01), seen
    healthy.check()


@LEVELS
def test_connect_reserved_flag(shared_broker, clients, healthy, level):
    c = clients.raw(shared_broker, version=level)
    c.send(R.connect(helpers.unique(), version=level, reserved=True))
    rejected(c, connack_codes=(0x81, 0x82) if level == 5 else None)
    healthy.check()


@LEVELS
def test_connect_fixed_header_flags(shared_broker, clients, healthy, level):
    c = clients.raw(shared_broker, version=level)
    pkt = bytearray(R.connect(helpers.unique(), version=level))
    pkt[0] |= 0x01
    c.send(bytes(pkt))
    rejected(c, connack_codes=(0x81, 0x82) if level == 5 else None)
    healthy.check()


@LEVELS
def test_invalid_utf8_client_id(shared_broker, clients, healthy, level):
    c = clients.raw(shared_broker, version=level)
    c.send(R.connect(b"bad\xff\xfeid", version=level))
    rejected(c, connack_codes=(0x02, 0x81, 0x85) if level == 5 else (0x02,))
    healthy.check()


def test_will_flag_zero_with_will_qos(shared_broker, clients, healthy):
    c = clients.raw(shared_broker, version=4)
    pkt = bytearray(R.connect(helpers.unique(), version=4))
    pkt[2 + 2 + 4 + 1] |= 0x08  # flags byte: will QoS 1 without will flag
    c.send(bytes(pkt))
    rejected(c)
    healthy.check()


def test_connect_receive_maximum_zero(shared_broker, clients, healthy):
    c = clients.raw(shared_broker, version=5)
    c.send(R.connect(helpers.unique(), version=5, props={R.P_RECEIVE_MAXIMUM: 0}))
    rejected(c, connack_codes=(0x82, 0x81))
    healthy.check()


def test_connect_truncated_then_close(shared_broker, clients, healthy):
    pkt = R.connect(helpers.unique(), version=4)
    c = clients.raw(shared_broker)
    c.send(pkt[:len(pkt) // 2])
    c.close()
    healthy.check()


@LEVELS
def test_second_connect(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    c.send(R.connect(helpers.unique(), version=level))
    rejected(c, v5_codes=(0x82,) if level == 5 else None)
    healthy.check()


# --- fixed header and lengths ---------------------------------------------------------------

@LEVELS
def test_subscribe_reserved_bits(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    pkt = bytearray(R.subscribe(1, "mal/x", version=level))
    pkt[0] = 0x80  # flags must be 0b0010
    c.send(bytes(pkt))
    rejected(c, v5_codes=(0x81,) if level == 5 else None)
    healthy.check()


@LEVELS
def test_pubrel_reserved_bits(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    c.send(R.packet(R.PUBREL, 0x00, struct.pack("!H", 1)))
    rejected(c, v5_codes=(0x81,) if level == 5 else None)
    healthy.check()


@LEVELS
def test_publish_qos3(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    pkt = bytearray(R.publish("mal/q3", b"x", qos=1, pid=1, version=level))
    pkt[0] |= 0x06
    c.send(bytes(pkt))
    rejected(c, v5_codes=(0x81,) if level == 5 else None)
    healthy.check()


@LEVELS
def test_publish_qos1_packet_id_zero(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    c.send(R.publish("mal/pid0", b"x", qos=1, pid=0, version=level))
    rejected(c, v5_codes=(0x81, 0x82) if level == 5 else None)
    healthy.check()


@LEVELS
def test_reserved_packet_type_zero(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    c.send(b"\x00\x00")
    rejected(c, v5_codes=(0x81, 0x82) if level == 5 else None)
    healthy.check()


@LEVELS
def test_remaining_length_over_four_bytes(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    c.send(b"\x30\xff\xff\xff\xff\x01" + b"\x00" * 16)
    rejected(c, v5_codes=(0x81,) if level == 5 else None)
    healthy.check()


def test_remaining_length_over_four_bytes_before_connect(shared_broker, clients, healthy):
    c = clients.raw(shared_broker)
    c.send(b"\x10\xff\xff\xff\xff\x01")
    rejected(c)
    healthy.check()


@LEVELS
def test_huge_remaining_length_then_close(shared_broker, clients, healthy, level):
    """Announcing 256 MB and sending a little must not make the broker allocate or wait."""
    c = raw_after_connect(shared_broker, clients, level)
    c.send(b"\x30\xff\xff\xff\x7f" + b"\x00\x03abc" + b"x" * 1000)
    time.sleep(0.2)
    c.close()
    healthy.check()


@LEVELS
def test_truncated_publish_then_close(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    pkt = R.publish(healthy.topic, b"should never arrive", qos=1, pid=3, version=level)
    c.send(pkt[:-5])
    time.sleep(0.2)
    c.close()
    healthy.c.expect_no_message(0.3)
    healthy.check()


@LEVELS
def test_string_length_beyond_packet(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    body = struct.pack("!H", 200) + b"mal/short"
    if level == 5:
        body += b"\x00"
    c.send(R.packet(R.PUBLISH, 0, body))
    rejected(c, v5_codes=(0x81,) if level == 5 else None)
    healthy.check()


@LEVELS
def test_subscribe_without_filters(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    body = struct.pack("!H", 1) + (b"\x00" if level == 5 else b"")
    c.send(R.packet(R.SUBSCRIBE, 0x02, body))
    rejected(c, v5_codes=(0x82, 0x81) if level == 5 else None)
    healthy.check()


@LEVELS
def test_subscribe_bad_options(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    # QoS 3 in the options byte; for v3.1.1 the upper bits are reserved too
    c.send(R.subscribe(1, [("mal/opt", 0x03)], version=level))
    rejected(c, v5_codes=(0x81, 0x82) if level == 5 else None)
    healthy.check()


def test_v5_subscribe_retain_handling_3(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 5)
    c.send(R.subscribe(1, [("mal/rh3", 0x30)], version=5))
    rejected(c, v5_codes=(0x81, 0x82))
    healthy.check()


def test_v5_shared_subscription_with_no_local(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 5)
    c.send(R.subscribe(1, [("$share/g/mal/nl", 0x04)], version=5))
    rejected(c, v5_codes=(0x82,))
    healthy.check()


# --- topics ---------------------------------------------------------------------------------

@LEVELS
def test_invalid_utf8_in_topic(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    c.send(R.publish(b"mal/\xc3\x28", b"x", version=level))
    rejected(c, v5_codes=(0x81, 0x90) if level == 5 else None)
    healthy.check()


@LEVELS
def test_nul_in_topic(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    c.send(R.publish(b"mal/\x00x", b"x", version=level))
    rejected(c, v5_codes=(0x81, 0x90) if level == 5 else None)
    healthy.check()


@LEVELS
@pytest.mark.parametrize("topic", ["mal/+", "mal/#", "+", "mal/a+b"])
def test_wildcard_in_publish_topic(shared_broker, clients, healthy, level, topic):
    c = raw_after_connect(shared_broker, clients, level)
    c.send(R.publish(topic, b"x", version=level))
    # 0x90 Topic Name invalid; mosquitto says 0x82 (protocol error)
    rejected(c, v5_codes=(0x90, 0x82) if level == 5 else None)
    healthy.check()


def test_empty_topic_v311(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 4)
    c.send(R.publish("", b"x"))
    rejected(c)
    healthy.check()


def test_empty_topic_without_alias_v5(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 5)
    c.send(R.publish("", b"x", version=5))
    rejected(c, v5_codes=(0x82,))
    healthy.check()


def test_invalid_utf8_in_subscribe_filter(shared_broker, clients, healthy):
    for level in (4, 5):
        c = raw_after_connect(shared_broker, clients, level)
        c.send(R.subscribe(1, [(b"mal/\xff", 0)], version=level))
        rejected(c, v5_codes=(0x81,) if level == 5 else None)
    healthy.check()


# --- properties -----------------------------------------------------------------------------

def test_v5_property_not_allowed_in_publish(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 5)
    c.send(R.publish("mal/prop", b"x", version=5, props={R.P_SESSION_EXPIRY: 5}))
    rejected(c, v5_codes=(0x81, 0x82))
    healthy.check()


def test_v5_duplicate_property(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 5)
    c.send(R.publish("mal/dup", b"x", version=5,
                     props=[(R.P_PAYLOAD_FORMAT, 0), (R.P_PAYLOAD_FORMAT, 1)]))
    rejected(c, v5_codes=(0x81, 0x82))
    healthy.check()


def test_v5_unknown_property(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 5)
    body = R.string("mal/unk") + b"\x02\x7f\x00" + b"x"
    c.send(R.packet(R.PUBLISH, 0, body))
    rejected(c, v5_codes=(0x81, 0x82))
    healthy.check()


def test_v5_property_length_beyond_packet(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 5)
    body = R.string("mal/plen") + b"\x40" + b"\x01\x01"
    c.send(R.packet(R.PUBLISH, 0, body))
    rejected(c, v5_codes=(0x81,))
    healthy.check()


def test_v5_subscription_identifier_zero(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 5)
    c.send(R.subscribe(1, [("mal/sid0", 0)], props={R.P_SUBSCRIPTION_ID: 0}, version=5))
    rejected(c, v5_codes=(0x81, 0x82))
    healthy.check()


def test_v5_publish_with_subscription_identifier(shared_broker, clients, healthy):
    c = raw_after_connect(shared_broker, clients, 5)
    c.send(R.publish("mal/sidpub", b"x", version=5, props={R.P_SUBSCRIPTION_ID: 3}))
    rejected(c, v5_codes=(0x81, 0x82))
    healthy.check()


# --- size -----------------------------------------------------------------------------------

@LEVELS
def test_packet_over_max_packet_size(broker_factory, clients, level):
    b = broker_factory(["max_packet_size 1000"])
    h = Healthy(b, clients)
    c = clients.raw_connected(b, version=level)
    c.publish(h.topic, b"o" * 1500, version=level)
    rejected(c, v5_codes=(0x95,) if level == 5 else None)
    h.c.expect_no_message(0.3)
    h.check()


def test_oversize_connect(broker_factory, clients):
    b = broker_factory(["max_packet_size 1000"])
    h = Healthy(b, clients)
    c = clients.raw(b, version=5)
    c.send(R.connect("big", version=5, props=[(R.P_USER_PROPERTY, ("k", "v" * 2000))]))
    rejected(c, connack_codes=(0x95,))
    h.check()


# --- many half-open connections -------------------------------------------------------------

def test_many_half_open_connections(shared_broker, clients, healthy):
    n = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 500
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    partial = R.connect("half", version=4)[:7]
    socks = []
    try:
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((shared_broker.host, shared_broker.port))
            socks.append(s)
        time.sleep(0.3)
        for i, s in enumerate(socks):
            if i % 2:
                try:
                    s.send(partial)
                except OSError:
                    pass
        # a normal client still connects, publishes and receives meanwhile
        t0 = time.monotonic()
        healthy.check()
        assert time.monotonic() - t0 < 3
        # (raw sockets: paho uses select(), which cannot watch descriptors above 1024)
        late = clients.raw_connected(shared_broker, version=5)
        late.subscribe([("mal/half", 1)])
        late.publish("mal/half", b"ok", qos=1, pid=1)
        got = [late.recv(3), late.recv(3)]
        assert sorted(p.type for p in got) == [R.PUBLISH, R.PUBACK]
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    healthy.check()


def test_v5_connect_maximum_packet_size_zero(shared_broker, clients, healthy):
    c = clients.raw(shared_broker, version=5)
    c.send(R.connect(helpers.unique(), version=5, props={R.P_MAXIMUM_PACKET_SIZE: 0}))
    rejected(c, connack_codes=(0x82, 0x81))
    healthy.check()


@pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])
def test_will_topic_with_wildcard(shared_broker, clients, healthy, level):
    c = clients.raw(shared_broker, version=level)
    c.send(R.connect(helpers.unique(), version=level,
                     will=dict(topic="mal/will/#", payload=b"w")))
    rejected(c)
    healthy.check()


def test_v311_password_without_username(shared_broker, clients, healthy):
    c = clients.raw(shared_broker, version=4)
    c.send(R.connect(helpers.unique(), version=4, password=b"pw"))
    rejected(c)
    healthy.check()


@LEVELS
def test_unsubscribe_reserved_bits_and_empty(shared_broker, clients, healthy, level):
    c = raw_after_connect(shared_broker, clients, level)
    body = struct.pack("!H", 1) + (b"\x00" if level == 5 else b"")
    c.send(R.packet(R.UNSUBSCRIBE, 0x02, body))
    rejected(c, v5_codes=(0x82, 0x81) if level == 5 else None)
    healthy.check()


def test_byte_by_byte_connect_and_publish(shared_broker, clients, healthy):
    """A packet split into one-byte TCP segments is still one packet."""
    c = clients.raw(shared_broker, version=5)
    data = R.connect(helpers.unique(), version=5) + R.subscribe(1, "mal/bytes", version=5) + \
        R.publish("mal/bytes", b"slow", version=5)
    for i in range(len(data)):
        c.send(data[i:i + 1])
        time.sleep(0.002)
    types = [c.recv(3).type for _ in range(3)]
    assert types == [R.CONNACK, R.SUBACK, R.PUBLISH]
    healthy.check()


def test_many_packets_in_one_segment(shared_broker, clients, healthy):
    c = clients.raw(shared_broker, version=4)
    t = "mal/burst/" + helpers.unique()
    data = R.connect(helpers.unique(), version=4) + R.subscribe(1, [(t, 1)])
    data += b"".join(R.publish(t, b"%d" % i, qos=1, pid=i + 1) for i in range(200))
    c.send(data)
    assert c.expect(R.CONNACK).rc == 0
    assert c.expect(R.SUBACK).codes == [1]
    pubs, acks = [], 0
    while len(pubs) < 200 or acks < 200:
        p = c.recv(5)
        if p.type == R.PUBACK:
            acks += 1
        elif p.type == R.PUBLISH:
            pubs.append(int(p.payload))
            c.send(R.puback(p.pid))
    assert pubs == list(range(200))
    healthy.check()
