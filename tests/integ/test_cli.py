"""The command line and configuration contract: -t, -c, -p, FILE:LINE errors, unknown and
unimplemented directives, durations, and orderly exit on SIGTERM."""

import re
import signal
import socket
import subprocess
import time

import pytest

import conftest
import helpers
import rawmqtt as R

BIN = conftest.BIN


def run(args, timeout=10):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def write(tmp_path, text, name="test.conf"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def check_error(r, path, line, word):
    assert r.returncode == 1, "exit %r, stderr: %s" % (r.returncode, r.stderr)
    out = r.stderr
    assert "%s:%d:" % (path, line) in out, "no %s:%d: in stderr: %r" % (path, line, out)
    assert word in out, "stderr does not name %r: %r" % (word, out)
    assert "config ok" not in r.stdout + r.stderr


GOOD = """# a comment
allow_anonymous true

listener {port} 127.0.0.1
max_connections 100
max_keepalive 120
max_packet_size 100000
message_size_limit 0
max_inflight_messages 20
max_queued_messages 1000
persistent_client_expiration 1h
retain_available true
max_topic_alias 10
sys_interval 10
allow_zero_length_clientid true
auto_id_prefix auto-
set_tcp_nodelay true
log_dest stderr
connection_messages true
log_timestamp false
"""


def test_check_good_config(tmp_path):
    path = write(tmp_path, GOOD.format(port=conftest.free_port()))
    r = run(["-t", "-c", path])
    assert r.returncode == 0, r.stderr
    assert "config ok" in r.stdout + r.stderr


def test_check_does_not_listen(tmp_path):
    port = conftest.free_port()
    path = write(tmp_path, GOOD.format(port=port))
    r = run(["-c", path, "-t"])
    assert r.returncode == 0
    assert not conftest.port_open("127.0.0.1", port)


@pytest.mark.parametrize("durations", ["30", "1h", "2d", "1w"])
def test_durations_accepted(tmp_path, durations):
    path = write(tmp_path, "listener %d 127.0.0.1\npersistent_client_expiration %s\n"
                 % (conftest.free_port(), durations))
    r = run(["-t", "-c", path])
    assert r.returncode == 0, r.stderr


def test_bad_value_reports_file_and_line(tmp_path):
    path = write(tmp_path, "allow_anonymous true\n\nmax_keepalive banana\n")
    r = run(["-t", "-c", path])
    check_error(r, path, 3, "max_keepalive")


def test_bad_value_without_t_exits_1_and_does_not_listen(tmp_path):
    port = conftest.free_port()
    path = write(tmp_path, "listener %d 127.0.0.1\nmax_inflight_messages -5\n" % port)
    r = run(["-c", path])
    check_error(r, path, 2, "max_inflight_messages")
    assert not conftest.port_open("127.0.0.1", port)


def test_unknown_directive(tmp_path):
    path = write(tmp_path, "# comment\nallow_anonymous true\nfrobnicate 12\n")
    r = run(["-t", "-c", path])
    check_error(r, path, 3, "frobnicate")


def test_unimplemented_mosquitto_directive(tmp_path):
    path = write(tmp_path, "allow_anonymous true\npersistence true\n")
    r = run(["-t", "-c", path])
    check_error(r, path, 2, "persistence")


@pytest.mark.parametrize("line,word", [
    ("listener 70000", "listener"),
    ("listener", "listener"),
    ("allow_anonymous maybe", "allow_anonymous"),
    ("persistent_client_expiration 3x", "persistent_client_expiration"),
    ("max_packet_size -1", "max_packet_size"),
    ("sys_interval", "sys_interval"),
    ("store nosuchstore://x", "store"),
])
def test_invalid_values(tmp_path, line, word):
    path = write(tmp_path, "allow_anonymous true\n%s\n" % line)
    r = run(["-t", "-c", path])
    check_error(r, path, 2, word)


def test_missing_config_file(tmp_path):
    r = run(["-t", "-c", str(tmp_path / "nope.conf")])
    assert r.returncode != 0
    assert "nope.conf" in r.stderr


def test_error_in_later_listener_block(tmp_path):
    text = "listener %d 127.0.0.1\nmax_connections 5\nlistener %d 127.0.0.1\n" \
           "max_connections lots\n" % (conftest.free_port(), conftest.free_port())
    path = write(tmp_path, text)
    check_error(run(["-t", "-c", path]), path, 4, "max_connections")


def test_port_override(tmp_path, clients):
    port = conftest.free_port()
    path = write(tmp_path, "allow_anonymous true\n")
    err = open(str(tmp_path / "stderr"), "wb")
    p = subprocess.Popen([BIN, "-c", path, "-p", str(port)], stderr=err,
                         stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        helpers.wait_until(lambda: conftest.port_open("127.0.0.1", port), timeout=10,
                           msg="listening on -p port")
        c = R.connected("127.0.0.1", port, helpers.unique("p"))
        c.close()
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = "timeout"
        err.close()
    assert rc == 0, "exit %r after SIGTERM" % rc


def test_sigterm_exits_zero(broker):
    assert broker.alive()
    rc = broker.stop()
    assert rc == 0, "exit %r after SIGTERM; stderr:\n%s" % (rc, broker.stderr())


def test_sigterm_disconnects_v5_clients_with_0x8b(broker, clients):
    c = clients.raw_connected(broker, version=5)
    v3 = clients.raw_connected(broker, version=4)
    broker.signal(signal.SIGTERM)
    seen = c.wait_closed(5)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    assert discs and discs[0].rc in (0x8B, 0x9C), "expected DISCONNECT 0x8B, saw %r" % seen
    v3.wait_closed(5)
    rc = broker.stop()
    assert rc == 0


def test_sigterm_exits_with_a_client_that_does_not_read(broker, clients):
    """Shutdown is bounded even when a client's socket is full (pending writes)."""
    slow = clients.raw_connected(broker, version=4)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.subscribe([("cli/full", 0)])
    pub = clients.raw_connected(broker, version=4)
    for _ in range(300):
        pub.send(R.publish("cli/full", b"f" * 16384))
    time.sleep(0.3)
    t0 = time.monotonic()
    rc = broker.stop()
    assert not broker.problems, broker.problems
    assert rc == 0 and time.monotonic() - t0 < 5


def test_verbose_flag_accepted(broker_factory, clients):
    b = broker_factory(args=["-v"])
    assert clients.v3(b).connack_rc == 0


def test_restart_keeps_serving(broker, clients):
    broker.restart()
    c = clients.v3(broker)
    c.subscribe("cli/restart")
    c.publish("cli/restart", b"x")
    assert c.expect_message().payload == b"x"


def test_config_with_crlf_and_trailing_spaces(tmp_path):
    path = write(tmp_path, "allow_anonymous true   \r\nlistener %d 127.0.0.1\r\n"
                 % conftest.free_port())
    r = run(["-t", "-c", path])
    assert r.returncode == 0, r.stderr


def test_error_message_format(tmp_path):
    path = write(tmp_path, "allow_anonymous true\nmax_queued_messages many\n")
    r = run(["-t", "-c", path])
    assert r.returncode == 1
    assert re.search(re.escape(path) + r":2: \S", r.stderr), r.stderr


def test_sighup_keeps_serving(broker, clients):
    c = clients.v3(broker)
    c.subscribe("cli/hup", qos=1)
    broker.proc.send_signal(signal.SIGHUP)
    helpers.wait_until(lambda: True, timeout=0.3)
    assert broker.alive(), broker.stderr()
    assert not c.disconnected.is_set(), "SIGHUP dropped a connected client"
    clients.v5(broker).publish("cli/hup", b"after", qos=1)
    assert c.expect_message().payload == b"after"
