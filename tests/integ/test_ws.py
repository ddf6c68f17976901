"""MQTT over WebSocket (`protocol websockets`): paho clients with transport="websockets",
plain and over TLS, interoperating with TCP clients on the same broker."""

import base64
import os
import socket

import pytest

import helpers


@pytest.fixture
def ws_broker(broker_factory):
    """Listener 0: TCP; listener 1: WebSocket."""
    return broker_factory(listeners=2, listener_opts=[[], ["protocol websockets"]])


def test_ws_and_tcp_interoperate(ws_broker, clients, version):
    b = ws_broker
    ws_sub = clients.paho(b, version=version, port=b.ports[1], transport="websockets")
    assert ws_sub.subscribe("ws/#", 1) == [1]
    tcp_sub = clients.paho(b, version=version)
    tcp_sub.subscribe("ws/#", 1)
    ws_pub = clients.paho(b, version=version, port=b.ports[1], transport="websockets")
    ws_pub.publish("ws/a", b"from-ws", qos=1)
    tcp_pub = clients.paho(b, version=version)
    tcp_pub.publish("ws/b", b"from-tcp", qos=1)
    for c in (ws_sub, tcp_sub):
        got = sorted((m.topic, m.payload) for m in c.expect_messages(2))
        assert got == [("ws/a", b"from-ws"), ("ws/b", b"from-tcp")]


def test_ws_large_messages_both_ways(ws_broker, clients):
    b = ws_broker
    big = os.urandom(300 * 1024)  # far more than one read, one frame header size class
    ws = clients.v5(b, port=b.ports[1], transport="websockets")
    ws.subscribe("big/#", 1)
    tcp = clients.v5(b)
    tcp.subscribe("big/#", 1)
    tcp.publish("big/tcp", big, qos=1)
    ws.publish("big/ws", big[::-1], qos=1)
    for c in (ws, tcp):
        got = {m.topic: m.payload for m in c.expect_messages(2, timeout=10)}
        assert got == {"big/tcp": big, "big/ws": big[::-1]}


def test_ws_many_small_messages_in_order(ws_broker, clients):
    b = ws_broker
    ws = clients.v3(b, port=b.ports[1], transport="websockets")
    ws.subscribe("seq", 1)
    pub = clients.v3(b)
    for i in range(500):
        pub.publish("seq", b"%d" % i, qos=1, wait=False)
    got = [int(m.payload) for m in ws.expect_messages(500, timeout=15)]
    assert got == list(range(500))


def http_upgrade(port, headers):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    req = "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        "%s: %s\r\n" % kv for kv in headers) + "\r\n"
    s.sendall(req.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return s, data.decode("latin-1")


def upgrade_headers(protocol="mqtt", version="13"):
    h = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
         ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
         ("Sec-WebSocket-Version", version)]
    if protocol:
        h.append(("Sec-WebSocket-Protocol", protocol))
    return h


def test_ws_upgrade_rules(ws_broker):
    port = ws_broker.ports[1]
    s, resp = http_upgrade(port, upgrade_headers())
    assert resp.startswith("HTTP/1.1 101"), resp
    assert "sec-websocket-protocol: mqtt" in resp.lower()
    s.close()
    s, resp = http_upgrade(port, upgrade_headers(protocol=None))
    assert resp.startswith("HTTP/1.1 400"), resp
    s.close()
    s, resp = http_upgrade(port, upgrade_headers(version="8"))
    assert resp.startswith("HTTP/1.1 426"), resp
    s.close()
    # Plain MQTT on a WebSocket listener is refused, and the broker carries on.
    c = ws_broker.raw(4, port=port)
    c.send(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
    c.wait_closed()
    c.close()
    s, resp = http_upgrade(port, upgrade_headers())
    assert resp.startswith("HTTP/1.1 101")
    s.close()
