"""Byte-exact MQTT 3.1 / 3.1.1 / 5.0 packets over a raw socket (stdlib only).

Builders return bytes; RawClient sends them and reads whole packets back with a timeout.
Nothing here ever blocks longer than the timeout it is given.
"""

import socket
import struct
import time

# Packet types
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)

TYPE_NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
              7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
              12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}

# MQTT 5 property identifiers
P_PAYLOAD_FORMAT = 0x01
P_MESSAGE_EXPIRY = 0x02
P_CONTENT_TYPE = 0x03
P_RESPONSE_TOPIC = 0x08
P_CORRELATION_DATA = 0x09
P_SUBSCRIPTION_ID = 0x0B
P_SESSION_EXPIRY = 0x11
P_ASSIGNED_CLIENT_ID = 0x12
P_SERVER_KEEP_ALIVE = 0x13
P_AUTH_METHOD = 0x15
P_AUTH_DATA = 0x16
P_REQUEST_PROBLEM_INFO = 0x17
P_WILL_DELAY = 0x18
P_REQUEST_RESPONSE_INFO = 0x19
P_RESPONSE_INFO = 0x1A
P_SERVER_REFERENCE = 0x1C
P_REASON_STRING = 0x1F
P_RECEIVE_MAXIMUM = 0x21
P_TOPIC_ALIAS_MAXIMUM = 0x22
P_TOPIC_ALIAS = 0x23
P_MAXIMUM_QOS = 0x24
P_RETAIN_AVAILABLE = 0x25
P_USER_PROPERTY = 0x26
P_MAXIMUM_PACKET_SIZE = 0x27
P_WILDCARD_SUB_AVAILABLE = 0x28
P_SUB_ID_AVAILABLE = 0x29
P_SHARED_SUB_AVAILABLE = 0x2A

_BYTE, _INT2, _INT4, _VARINT, _STR, _BIN, _PAIR = range(7)
PROP_TYPES = {
    0x01: _BYTE, 0x02: _INT4, 0x03: _STR, 0x08: _STR, 0x09: _BIN, 0x0B: _VARINT, 0x11: _INT4,
    0x12: _STR, 0x13: _INT2, 0x15: _STR, 0x16: _BIN, 0x17: _BYTE, 0x18: _INT4, 0x19: _BYTE,
    0x1A: _STR, 0x1C: _STR, 0x1F: _STR, 0x21: _INT2, 0x22: _INT2, 0x23: _INT2, 0x24: _BYTE,
    0x25: _BYTE, 0x26: _PAIR, 0x27: _INT4, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}


class ProtocolError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Encoding


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string(s):
    """MQTT UTF-8 string. bytes are sent unchanged (to test invalid UTF-8)."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    return struct.pack("!H", len(s)) + s


binary = string


def properties(props):
    """props: None, a dict {id: value} or a list of (id, value) pairs (repeats allowed)."""
    if props is None:
        props = []
    elif isinstance(props, dict):
        props = list(props.items())
    body = bytearray()
    for pid, val in props:
        t = PROP_TYPES[pid]
        body += varint(pid)
        if t == _BYTE:
            body += bytes([val])
        elif t == _INT2:
            body += struct.pack("!H", val)
        elif t == _INT4:
            body += struct.pack("!I", val)
        elif t == _VARINT:
            body += varint(val)
        elif t in (_STR, _BIN):
            body += string(val)
        elif t == _PAIR:
            body += string(val[0]) + string(val[1])
    return varint(len(body)) + bytes(body)


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect(client_id="", version=4, clean=True, keepalive=60, will=None, username=None,
            password=None, props=None, reserved=False, proto_name=None):
    """version: 3 (MQIsdp), 4 (3.1.1) or 5. will: dict(topic, payload, qos, retain, props)."""
    if proto_name is None:
        proto_name = b"MQIsdp" if version == 3 else b"MQTT"
    flags = 0
    if reserved:
        flags |= 0x01
    if clean:
        flags |= 0x02
    if will is not None:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = string(proto_name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += properties(props)
    body += string(client_id)
    if will is not None:
        if version == 5:
            body += properties(will.get("props"))
        body += string(will["topic"]) + binary(will.get("payload", b""))
    if username is not None:
        body += string(username)
    if password is not None:
        body += binary(password)
    return packet(CONNECT, 0, body)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=None, props=None, version=4):
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = string(topic)
    if qos > 0:
        body += struct.pack("!H", pid if pid is not None else 1)
    if version == 5:
        body += properties(props)
    body += payload
    return packet(PUBLISH, flags, body)


def subscribe(pid, filters, props=None, version=4):
    """filters: list of (filter, options_byte) or a single filter string (QoS 0)."""
    if isinstance(filters, (str, bytes)):
        filters = [(filters, 0)]
    body = struct.pack("!H", pid)
    if version == 5:
        body += properties(props)
    for f, opts in filters:
        body += string(f) + bytes([opts])
    return packet(SUBSCRIBE, 0x02, body)


def unsubscribe(pid, filters, props=None, version=4):
    if isinstance(filters, (str, bytes)):
        filters = [filters]
    body = struct.pack("!H", pid)
    if version == 5:
        body += properties(props)
    for f in filters:
        body += string(f)
    return packet(UNSUBSCRIBE, 0x02, body)


def _ack(ptype, flags, pid, rc, version, props):
    body = struct.pack("!H", pid)
    if version == 5 and (rc or props):
        body += bytes([rc])
        if props:
            body += properties(props)
    return packet(ptype, flags, body)


def puback(pid, rc=0, version=4, props=None):
    return _ack(PUBACK, 0, pid, rc, version, props)


def pubrec(pid, rc=0, version=4, props=None):
    return _ack(PUBREC, 0, pid, rc, version, props)


def pubrel(pid, rc=0, version=4, props=None):
    return _ack(PUBREL, 0x02, pid, rc, version, props)


def pubcomp(pid, rc=0, version=4, props=None):
    return _ack(PUBCOMP, 0, pid, rc, version, props)


def pingreq():
    return packet(PINGREQ, 0, b"")


def disconnect(rc=None, props=None, version=4):
    if version != 5 or (rc is None and not props):
        return packet(DISCONNECT, 0, b"")
    body = bytes([rc or 0])
    if props:
        body += properties(props)
    return packet(DISCONNECT, 0, body)


# ---------------------------------------------------------------------------------------------
# Decoding


def decode_varint(buf, pos):
    mult, val = 1, 0
    for i in range(4):
        if pos >= len(buf):
            raise ProtocolError("truncated varint")
        b = buf[pos]
        pos += 1
        val += (b & 0x7F) * mult
        if not b & 0x80:
            return val, pos
        mult *= 128
    raise ProtocolError("varint longer than 4 bytes")


def _str(buf, pos):
    (n,) = struct.unpack_from("!H", buf, pos)
    return bytes(buf[pos + 2:pos + 2 + n]), pos + 2 + n


def decode_properties(buf, pos):
    """Returns (list of (id, value), new pos). Strings are decoded to str."""
    n, pos = decode_varint(buf, pos)
    end = pos + n
    out = []
    while pos < end:
        pid, pos = decode_varint(buf, pos)
        t = PROP_TYPES.get(pid)
        if t is None:
            raise ProtocolError("unknown property 0x%02x" % pid)
        if t == _BYTE:
            val = buf[pos]
            pos += 1
        elif t == _INT2:
            (val,) = struct.unpack_from("!H", buf, pos)
            pos += 2
        elif t == _INT4:
            (val,) = struct.unpack_from("!I", buf, pos)
            pos += 4
        elif t == _VARINT:
            val, pos = decode_varint(buf, pos)
        elif t == _STR:
            val, pos = _str(buf, pos)
            val = val.decode("utf-8")
        elif t == _BIN:
            val, pos = _str(buf, pos)
        else:
            k, pos = _str(buf, pos)
            v, pos = _str(buf, pos)
            val = (k.decode(), v.decode())
        out.append((pid, val))
    return out, end


class Props(list):
    """List of (id, value) with dict-like access to the first value of an id."""

    def get(self, pid, default=None):
        for k, v in self:
            if k == pid:
                return v
        return default

    def all(self, pid):
        return [v for k, v in self if k == pid]

    def __contains__(self, pid):
        return any(k == pid for k, _ in self)


class Packet:
    def __init__(self, first, body, version):
        self.type = first >> 4
        self.flags = first & 0x0F
        self.body = body
        self.version = version
        self.props = Props()
        self._decode()

    def __repr__(self):
        extra = {k: v for k, v in self.__dict__.items() if k not in ("body", "version", "type")}
        return "<%s %r>" % (TYPE_NAMES.get(self.type, self.type), extra)

    def _decode(self):
        b, v5 = self.body, self.version == 5
        t = self.type
        if t == CONNACK:
            self.session_present = bool(b[0] & 1)
            self.rc = b[1]
            if v5 and len(b) > 2:
                p, _ = decode_properties(b, 2)
                self.props = Props(p)
        elif t == PUBLISH:
            self.dup = bool(self.flags & 0x08)
            self.qos = (self.flags >> 1) & 3
            self.retain = bool(self.flags & 1)
            topic, pos = _str(b, 0)
            self.topic = topic.decode("utf-8")
            self.pid = None
            if self.qos:
                (self.pid,) = struct.unpack_from("!H", b, pos)
                pos += 2
            if v5:
                p, pos = decode_properties(b, pos)
                self.props = Props(p)
            self.payload = bytes(b[pos:])
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK):
            (self.pid,) = struct.unpack_from("!H", b, 0)
            pos = 2
            if t in (SUBACK, UNSUBACK):
                if v5:
                    p, pos = decode_properties(b, pos)
                    self.props = Props(p)
                self.codes = list(b[pos:])
            else:
                self.rc = b[2] if len(b) > 2 else 0
                if v5 and len(b) > 3:
                    p, _ = decode_properties(b, 3)
                    self.props = Props(p)
        elif t == DISCONNECT:
            self.rc = b[0] if len(b) > 0 else 0
            if len(b) > 1:
                p, _ = decode_properties(b, 1)
                self.props = Props(p)


class Closed(Exception):
    """The peer closed the connection."""


class RawClient:
    """A TCP connection speaking hand-built MQTT. Every read has a timeout."""

    def __init__(self, host, port, version=4, timeout=5.0):
        self.version = version
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for data")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            raise Closed("connection reset")
        if not data:
            raise Closed("connection closed")
        self.buf += data

    def recv(self, timeout=None):
        """Reads one whole packet. Raises socket.timeout or Closed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 2:
                try:
                    n, pos = decode_varint(self.buf, 1)
                except ProtocolError as e:
                    if "truncated" not in str(e):
                        raise
                else:
                    if len(self.buf) >= pos + n:
                        first = self.buf[0]
                        body = bytes(self.buf[pos:pos + n])
                        del self.buf[:pos + n]
                        return Packet(first, body, self.version)
            self._fill(deadline)

    def expect(self, ptype, timeout=None):
        """Reads packets until one of type ptype, failing on anything else but PINGRESP."""
        p = self.recv(timeout)
        while p.type == PINGRESP and ptype != PINGRESP:
            p = self.recv(timeout)
        if p.type != ptype:
            raise AssertionError("expected %s, got %r" % (TYPE_NAMES[ptype], p))
        return p

    def try_recv(self, timeout):
        """A packet, or None on timeout. Raises Closed."""
        try:
            return self.recv(timeout)
        except socket.timeout:
            return None

    def wait_closed(self, timeout=5.0):
        """Reads until the peer closes. Returns the packets seen before the close.
        Raises AssertionError if the connection is still open after timeout."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                seen.append(self.recv(max(0.0, deadline - time.monotonic()) or 0.001))
            except Closed:
                return seen
            except socket.timeout:
                raise AssertionError("connection still open after %.1fs (saw %r)"
                                     % (timeout, seen))
            except OSError:
                return seen

    def is_open(self, timeout=0.3):
        """True if the connection is still open (sends a PINGREQ and expects PINGRESP)."""
        try:
            self.send(pingreq())
            deadline = time.monotonic() + timeout + 2
            while time.monotonic() < deadline:
                p = self.recv(max(0.01, deadline - time.monotonic()))
                if p.type == PINGRESP:
                    return True
            return False
        except (Closed, OSError):
            return False

    # Conveniences -----------------------------------------------------------------------

    def connect(self, client_id="", **kw):
        """Sends CONNECT and returns the CONNACK packet."""
        kw.setdefault("version", self.version)
        self.send(connect(client_id, **kw))
        return self.expect(CONNACK)

    def subscribe(self, filters, pid=1, props=None):
        self.send(subscribe(pid, filters, props, self.version))
        return self.expect(SUBACK)

    def publish(self, topic, payload=b"", qos=0, **kw):
        kw.setdefault("version", self.version)
        self.send(publish(topic, payload, qos, **kw))


def connected(host, port, client_id="", version=4, timeout=5.0, **kw):
    """Opens a RawClient and completes CONNECT/CONNACK (rc must be 0)."""
    c = RawClient(host, port, version, timeout)
    ack = c.connect(client_id, **kw)
    if ack.rc != 0:
        c.close()
        raise AssertionError("CONNACK rc=0x%02x" % ack.rc)
    c.connack = ack
    return c
