"""paho-mqtt (1.6.x) wrappers whose every wait is bounded.

    c = Client(broker, "id", version=5).connect()
    c.subscribe("a/#", qos=1)
    c.publish("a/b", b"x", qos=1)
    m = c.expect_message()
"""

import itertools
import queue
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

V311 = mqtt.MQTTv311
V31 = mqtt.MQTTv31
V5 = mqtt.MQTTv5
WAIT = 5.0  # default bound for every wait

_ids = itertools.count()


def unique(prefix="c"):
    return "%s-%d-%d" % (prefix, int(time.time() * 1000) % 100000, next(_ids))


def props(packet_type, **kw):
    """props(PacketTypes.PUBLISH, MessageExpiryInterval=10, UserProperty=[("a", "b")])."""
    p = Properties(packet_type)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def publish_props(**kw):
    return props(PacketTypes.PUBLISH, **kw)


def connect_props(**kw):
    return props(PacketTypes.CONNECT, **kw)


def get_prop(properties, name, default=None):
    if properties is None:
        return default
    return getattr(properties, name, default)


class Client:
    """A paho client on its own network thread, with queued messages and bounded waits."""

    def __init__(self, broker, client_id=None, version=V311, clean=True, keepalive=60,
                 will=None, username=None, password=None, port=None, transport="tcp",
                 tls=None):
        """tls: None, or a dict for paho's tls_set (ca_certs, certfile, keyfile...).
        transport: "tcp" or "websockets" (path /mqtt)."""
        self.broker = broker
        self.port = port or broker.port
        self.version = version
        self.client_id = unique() if client_id is None else client_id
        self.clean = clean
        self.keepalive = keepalive
        if version == V5:
            self.c = mqtt.Client(self.client_id, protocol=V5, reconnect_on_failure=False,
                                 transport=transport)
        else:
            self.c = mqtt.Client(self.client_id, clean_session=clean, protocol=version,
                                 reconnect_on_failure=False, transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        if tls is not None:
            self.c.tls_set(**tls)
        if will:
            self.c.will_set(**will)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_rc = None
        self.connack_flags = None
        self.connack_props = None
        self.disconnect_rc = None
        self.disconnect_props = None
        self._subacks = {}
        self._suback_events = {}
        self._lock = threading.Lock()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self._unsub_events = {}
        self._started = False

    # callbacks ------------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self.connack_flags = flags
        self.connack_rc = rc.value if hasattr(rc, "value") else rc
        self.connack_props = properties
        self.connected.set()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self.disconnect_rc = rc.value if hasattr(rc, "value") else rc
        self.disconnect_props = properties
        self.disconnected.set()
        self.connected.set()  # unblock a connect() waiting on a refused connection

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def _ev(self, table, mid):
        with self._lock:
            return table.setdefault(mid, threading.Event())

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        codes = [g.value if hasattr(g, "value") else g for g in granted]
        self._subacks[mid] = codes
        self._ev(self._suback_events, mid).set()

    def _on_unsubscribe(self, client, userdata, mid, *rest):
        self._ev(self._unsub_events, mid).set()

    # actions --------------------------------------------------------------------------------

    def connect(self, properties=None, clean_start=None, timeout=WAIT, expect_rc=0):
        """Connects and waits for CONNACK. Returns self. Asserts the CONNACK code."""
        kw = {}
        if self.version == V5:
            kw["clean_start"] = self.clean if clean_start is None else clean_start
            kw["properties"] = properties
        self.c.connect(self.broker.host, self.port, self.keepalive, **kw)
        self.c.loop_start()
        self._started = True
        if not self.connected.wait(timeout):
            raise AssertionError("no CONNACK within %.1fs for %s" % (timeout, self.client_id))
        if expect_rc is not None:
            assert self.connack_rc == expect_rc, \
                "CONNACK rc=%r (expected %r) for %s" % (self.connack_rc, expect_rc,
                                                         self.client_id)
            if expect_rc == 0:
                assert not self.disconnected.is_set(), "disconnected right after CONNACK"
        return self

    @property
    def session_present(self):
        return bool(self.connack_flags and self.connack_flags.get("session present"))

    def subscribe(self, topic, qos=0, options=None, properties=None, timeout=WAIT):
        """Subscribes and waits for SUBACK; returns the list of granted codes.
        topic may be a list of (topic, qos-or-SubscribeOptions)."""
        if self.version == V5:
            if isinstance(topic, list):
                rc, mid = self.c.subscribe(topic, properties=properties)
            else:
                opt = options if options is not None else SubscribeOptions(qos=qos)
                rc, mid = self.c.subscribe(topic, options=opt, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, "subscribe failed locally: %r" % rc
        if not self._ev(self._suback_events, mid).wait(timeout):
            raise AssertionError("no SUBACK within %.1fs" % timeout)
        return self._subacks[mid]

    def unsubscribe(self, topic, timeout=WAIT):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        if not self._ev(self._unsub_events, mid).wait(timeout):
            raise AssertionError("no UNSUBACK within %.1fs" % timeout)

    def publish(self, topic, payload=b"", qos=0, retain=False, properties=None, wait=True,
                timeout=WAIT):
        """Publishes; for QoS > 0 waits for the flow to complete (PUBACK/PUBCOMP)."""
        info = self.c.publish(topic, payload, qos, retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, "publish failed locally: %r" % info.rc
        if wait:
            info.wait_for_publish(timeout)
            if qos > 0 and not info.is_published():
                raise AssertionError("QoS %d publish to %r not acknowledged within %.1fs"
                                     % (qos, topic, timeout))
        return info

    def expect_message(self, timeout=WAIT, topic=None):
        """The next message (optionally: the next one on topic, others are discarded)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                m = self.messages.get(timeout=max(0.001, remaining))
            except queue.Empty:
                raise AssertionError("%s: no message%s within %.1fs" % (
                    self.client_id, " on %r" % topic if topic else "", timeout))
            if topic is None or m.topic == topic:
                return m

    def expect_messages(self, n, timeout=WAIT):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            remaining = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(0.001, remaining)))
            except queue.Empty:
                raise AssertionError("%s: got %d of %d messages within %.1fs: %r" % (
                    self.client_id, len(out), n, timeout,
                    [(m.topic, m.payload) for m in out]))
        return out

    def expect_no_message(self, timeout=0.5):
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError("%s: unexpected message %r %r" % (self.client_id, m.topic,
                                                                 m.payload))

    def drain(self, timeout=0.3):
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=timeout))
            except queue.Empty:
                return out

    def wait_disconnected(self, timeout=WAIT):
        if not self.disconnected.wait(timeout):
            raise AssertionError("%s still connected after %.1fs" % (self.client_id, timeout))
        return self.disconnect_rc

    def disconnect(self, reasoncode=None, properties=None):
        if not self.disconnected.is_set():
            if self.version == V5 and (reasoncode is not None or properties is not None):
                from paho.mqtt.reasoncodes import ReasonCodes
                rc = ReasonCodes(PacketTypes.DISCONNECT, identifier=reasoncode or 0)
                self.c.disconnect(rc, properties)
            else:
                self.c.disconnect()
            self.disconnected.wait(WAIT)
        self.stop()

    def kill(self):
        """Closes the socket without DISCONNECT (abnormal close)."""
        sock = self.c.socket()
        self.c.loop_stop()
        self._started = False
        if sock is not None:
            try:
                import socket as _s
                sock.shutdown(_s.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stop(self):
        if self._started:
            self.c.loop_stop()
            self._started = False

    def close(self):
        try:
            if not self.disconnected.is_set() and self._started:
                self.c.disconnect()
                self.disconnected.wait(1.0)
        finally:
            self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_until(pred, timeout=WAIT, interval=0.05, msg="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("%s not reached within %.1fs" % (msg, timeout))
