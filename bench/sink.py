#!/usr/bin/python3
"""Fake MQTT 5 broker for measuring shoal-bench's own ceiling (see README.md).

  sink.py PORT discard   accept CONNECT and SUBSCRIBE, discard everything (pub ceiling)
  sink.py PORT blast N   after SUBACK, send the same pre-encoded QoS 0 PUBLISH packets
                         (N-byte payload, no payload headers) as fast as the socket takes
                         them (sub ceiling)

It answers only MQTT 5 clients (-V 5) and assumes CONNECT and SUBSCRIBE each arrive whole.
"""
import socket
import sys
import threading


def serve(conn, mode, size):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.recv(65536)                               # CONNECT
    conn.sendall(b"\x20\x03\x00\x00\x00")          # CONNACK, v5, success
    if mode == "discard":
        buf = bytearray(1 << 20)
        while conn.recv_into(buf):
            pass
        return
    conn.recv(65536)                               # SUBSCRIBE (packet id 1)
    conn.sendall(b"\x90\x04\x00\x01\x00\x00")      # SUBACK
    topic = b"fan/x"
    body = len(topic).to_bytes(2, "big") + topic + b"\x00" + b"x" * size
    rl, n = bytearray(), len(body)
    while True:
        rl.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    pkt = b"\x30" + bytes(rl) + body
    blob = pkt * max(1, (1 << 20) // len(pkt))
    try:
        while True:
            conn.sendall(blob)
    except OSError:
        pass


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, mode, size), daemon=True).start()


if __name__ == "__main__":
    main()
