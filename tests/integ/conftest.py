"""Fixtures: real broker processes on free loopback ports, and clients that clean up.

SHOAL_BIN: the broker binary (default <repo>/build/shoal). SHOAL_SRC: the repository root.
SHOAL_IMPL=mosquitto (or a SHOAL_BIN named mosquitto*) runs the suite against mosquitto 2 as a
reference: the same config lines are written, since shoal reads mosquitto.conf.

Each broker's stderr goes to a file; at teardown the broker gets SIGTERM (then SIGKILL), and the
test fails if it died of a signal (SIGSEGV, SIGABRT from ASan...), did not exit on SIGTERM, or
printed a sanitizer report.
"""

import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import helpers  # noqa: E402
import rawmqtt  # noqa: E402

SRC = os.environ.get("SHOAL_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SHOAL_BIN") or os.path.join(SRC, "build", "shoal")
IMPL = os.environ.get("SHOAL_IMPL") or (
    "mosquitto" if os.path.basename(BIN).startswith("mosquitto") else "shoal")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 25.0  # a clustered node drains for up to 20 s (node/drain.c)
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                   "ThreadSanitizer")
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
                 signal.SIGTRAP}


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


_raise_nofile()  # brokers inherit it; test_malformed opens 2,000 sockets


# Ports come from a slice of 2,000 below the ephemeral range (32768 and up), so that no
# client's outgoing connection can hold one, and each test process that ctest runs side by side
# has its own slice (SHOAL_PORT_SLICE, set in tests/CMakeLists.txt). Within a slice a port is
# handed out once per cycle: asking the kernel for a free port twice can give the same one
# back before anything listens on it.
_PORT_SLICE = int(os.environ.get("SHOAL_PORT_SLICE", os.getpid() % 6))
_PORT_BASE = 20000 + 2000 * (_PORT_SLICE % 6)
_port_next = [0]


def free_port():
    for _ in range(2000):
        port = _PORT_BASE + _port_next[0]
        _port_next[0] = (_port_next[0] + 1) % 2000
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue  # in use, or still in TIME_WAIT
        finally:
            s.close()
    raise RuntimeError("no free port in %d-%d" % (_PORT_BASE, _PORT_BASE + 1999))


def port_open(host, port, timeout=0.2):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


class Broker:
    """One broker process. Attributes: host, port, ports (all listeners), config, proc.

    host: the address its listeners bind and its readiness check dials. prefix: a command the
    broker runs under, e.g. ["ip", "netns", "exec", NS] to start it in a network namespace
    (the command must exec the broker, so that signals and the exit status are its own)."""

    def __init__(self, workdir, extra=(), listeners=1, args=(), name="broker",
                 raw_config=None, listener_opts=None, host="127.0.0.1", prefix=()):
        self.host = host
        self.prefix = list(prefix)
        self.workdir = str(workdir)
        self.name = name
        self.impl = IMPL
        self.is_mosquitto = IMPL == "mosquitto"
        self.args = list(args)
        self.ports = [free_port() for _ in range(listeners)]
        self.port = self.ports[0]
        self.config = os.path.join(self.workdir, name + ".conf")
        self.stderr_path = os.path.join(self.workdir, name + ".stderr")
        self.stdout_path = os.path.join(self.workdir, name + ".stdout")
        self.extra = list(extra)
        self.listener_opts = listener_opts or []
        self.proc = None
        self.problems = []
        self.runs = 0
        self.signalled = False
        if raw_config is not None:
            text = raw_config
        else:
            text = self.render()
        with open(self.config, "w") as f:
            f.write(text)

    def render(self):
        """Global lines first, then one listener block per port. Lines in extra that are
        listener options (max_connections, protocol) go under the first listener.
        listener_opts[i], a list of lines, goes under listener i."""
        per_listener = ("max_connections", "protocol")
        if self.is_mosquitto:  # a listener option in mosquitto, global in shoal
            per_listener += ("max_topic_alias",)
        glob = [l for l in self.extra if l.split()[0] not in per_listener]
        local = [l for l in self.extra if l.split()[0] in per_listener]
        lines = []
        if not any(l.split()[0] == "allow_anonymous" for l in glob):
            lines.append("allow_anonymous true")
        lines += glob
        for i, p in enumerate(self.ports):
            lines.append("listener %d %s" % (p, self.host))
            if i == 0:
                lines += local
            if i < len(self.listener_opts):
                lines += self.listener_opts[i]
        return "\n".join(lines) + "\n"

    def start(self):
        self.runs += 1
        self.signalled = False
        err = open(self.stderr_path, "ab")
        out = open(self.stdout_path, "ab")
        err.write(("--- start %d ---\n" % self.runs).encode())
        err.flush()
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self.proc = subprocess.Popen(self.prefix + [BIN, "-c", self.config] + self.args,
                                     stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        err.close()
        out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None
                raise AssertionError("%s exited with %s at start; stderr:\n%s"
                                     % (BIN, rc, self.stderr()))
            if all(port_open(self.host, p) for p in self.ports):
                return self
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        raise AssertionError("%s did not listen on %s within %.0fs; stderr:\n%s"
                             % (BIN, self.ports, START_TIMEOUT, self.stderr()))

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-8000:]
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        """Stops THIS process: sig, wait, then SIGKILL. Records problems for teardown."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.problems.append("did not exit within %.0fs of %s" % (STOP_TIMEOUT,
                                                                          sig.name))
                p.kill()
                p.wait()
        elif not self.signalled:
            self.problems.append("had already exited with %s before stop" % p.returncode)
        rc = p.returncode
        if rc < 0 and -rc in CRASH_SIGNALS:
            self.problems.append("died of signal %s" % signal.Signals(-rc).name)
        text = self.stderr()
        for mark in SANITIZER_MARKS:
            if mark in text:
                self.problems.append("printed %r" % mark)
        self.proc = None
        return rc

    def signal(self, sig):
        """Sends sig to this broker (the test expects it to exit)."""
        self.signalled = True
        self.proc.send_signal(sig)

    def restart(self):
        self.stop()
        return self.start()

    def check(self):
        """Raises if anything went wrong with this broker."""
        if self.problems:
            raise AssertionError("broker %s (%s): %s\n--- stderr ---\n%s" % (
                self.name, BIN, "; ".join(self.problems), self.stderr()))

    def raw(self, version=4, timeout=5.0, port=None):
        return rawmqtt.RawClient(self.host, port or self.port, version, timeout)


class _Registry:
    def __init__(self, tmp_path_factory, scope_name):
        self.tmp_path_factory = tmp_path_factory
        self.scope_name = scope_name
        self.brokers = []

    def make(self, extra=(), start=True, **kw):
        d = self.tmp_path_factory.mktemp(self.scope_name[:40])
        b = Broker(d, extra, name="broker%d" % len(self.brokers), **kw)
        self.brokers.append(b)
        if start:
            b.start()
        return b

    def finish(self):
        errors = []
        for b in self.brokers:
            b.stop()
            if b.problems:
                try:
                    b.check()
                except AssertionError as e:
                    errors.append(str(e))
        if errors:
            pytest.fail("\n\n".join(errors), pytrace=False)


def _safe(name):
    return "".join(c if c.isalnum() else "_" for c in name)


@pytest.fixture
def broker_factory(tmp_path_factory, request):
    """broker_factory(["max_keepalive 10"], listeners=1, args=[...], start=True) -> Broker."""
    reg = _Registry(tmp_path_factory, _safe(request.node.name))
    yield reg.make
    reg.finish()


@pytest.fixture
def broker(broker_factory):
    """A fresh broker with the default configuration."""
    return broker_factory()


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory, request):
    """One default broker for a whole module (tests must use unique topics and ids)."""
    reg = _Registry(tmp_path_factory, _safe(request.module.__name__))
    b = reg.make()
    yield b
    reg.finish()


class _Clients:
    def __init__(self):
        self.items = []

    @staticmethod
    def _alive(broker):
        if not broker.alive():
            raise AssertionError("broker %s is not running (exit %r); stderr:\n%s" % (
                broker.name, broker.proc and broker.proc.returncode, broker.stderr()))

    def paho(self, broker, client_id=None, version=helpers.V311, connect=True,
             properties=None, **kw):
        self._alive(broker)
        c = helpers.Client(broker, client_id, version, **kw)
        self.items.append(c)
        if connect:
            c.connect(properties=properties)
        return c

    def v3(self, broker, client_id=None, **kw):
        return self.paho(broker, client_id, helpers.V311, **kw)

    def v5(self, broker, client_id=None, **kw):
        return self.paho(broker, client_id, helpers.V5, **kw)

    def raw(self, broker, version=4, timeout=5.0, port=None):
        self._alive(broker)
        c = broker.raw(version, timeout, port)
        self.items.append(c)
        return c

    def raw_connected(self, broker, client_id=None, version=4, **kw):
        c = self.raw(broker, version)
        ack = c.connect(helpers.unique("raw") if client_id is None else client_id, **kw)
        assert ack.rc == 0, "CONNACK rc=0x%02x" % ack.rc
        c.connack = ack
        return c

    def close_all(self):
        for c in reversed(self.items):
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def clients(broker_factory):
    """Client factory: clients.v3(broker), clients.v5(broker, 'id'), clients.raw(broker, 5).
    Everything is closed before the brokers stop."""
    c = _Clients()
    yield c
    c.close_all()


@pytest.fixture(params=[helpers.V311, helpers.V5], ids=["v311", "v5"])
def version(request):
    """Runs a test once with paho MQTTv311 and once with MQTTv5."""
    return request.param


class Redis:
    """A redis-server of the test's own, on a free loopback port, with AOF in workdir.
    host: the loopback-range address it binds (one other than 127.0.0.1 for network namespaces)."""

    def __init__(self, workdir, host="127.0.0.1"):
        self.workdir = str(workdir)
        self.host = host
        self.port = free_port()
        self.proc = None
        self.url = "redis://%s:%d" % (host, self.port)

    def start(self):
        log = open(os.path.join(self.workdir, "redis.log"), "ab")
        # Protected mode refuses every client but 127.0.0.1 and ::1, even on another
        # loopback-range address; the bind address alone keeps it private.
        unprotected = ["--protected-mode", "no"] if self.host != "127.0.0.1" else []
        self.proc = subprocess.Popen(
            ["/usr/bin/redis-server", "--port", str(self.port), "--bind", self.host,
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", self.workdir, "--daemonize", "no"] + unprotected,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s" % self.proc.returncode)
            if port_open(self.host, self.port):
                return self
            time.sleep(0.02)
        raise AssertionError("redis-server did not listen within %.0fs" % START_TIMEOUT)

    def stop(self, sig=signal.SIGTERM):
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cli(self, *args):
        return subprocess.run(
            ["/usr/bin/redis-cli", "-h", self.host, "-p", str(self.port)] + list(args),
            capture_output=True, text=True, timeout=10).stdout


@pytest.fixture
def redis(tmp_path_factory):
    """A fresh redis-server with AOF; stopped at teardown."""
    r = Redis(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()
