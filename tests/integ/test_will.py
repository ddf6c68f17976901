"""Will messages: abnormal close, normal DISCONNECT, v5 DISCONNECT 0x04, v5 Will Delay Interval
(delayed, cancelled by reconnect, capped by session end), will retain, QoS and properties."""

import time

import pytest

import helpers
import rawmqtt as R

LEVELS = pytest.mark.parametrize("level", [3, 4, 5], ids=["v31", "v311", "v5"])


def _watcher(clients, broker, topic, qos=1):
    w = clients.v5(broker)
    w.subscribe(topic, qos=qos)
    return w


def _will_client(clients, broker, level, topic, payload=b"gone", qos=1, retain=False,
                 will_props=None, props=None, cid=None, keepalive=60, clean=True):
    c = clients.raw(broker, version=level)
    ack = c.connect(cid or helpers.unique("will"), version=level, keepalive=keepalive,
                    clean=clean, props=props,
                    will=dict(topic=topic, payload=payload, qos=qos, retain=retain,
                              props=will_props))
    assert ack.rc == 0
    return c


@LEVELS
def test_will_sent_on_abnormal_close(broker, clients, level):
    t = "will/abn/%d" % level
    w = _watcher(clients, broker, t)
    c = _will_client(clients, broker, level, t)
    c.close()
    m = w.expect_message()
    assert (m.topic, m.payload, m.qos) == (t, b"gone", 1)


@LEVELS
def test_will_not_sent_on_disconnect(broker, clients, level):
    t = "will/normal/%d" % level
    w = _watcher(clients, broker, t)
    c = _will_client(clients, broker, level, t)
    c.send(R.disconnect(version=level))
    c.wait_closed(3)
    w.expect_no_message(1.0)


def test_will_sent_with_paho_socket_kill(broker, clients, version):
    t = "will/paho"
    w = _watcher(clients, broker, t)
    c = clients.paho(broker, version=version,
                     will=dict(topic=t, payload=b"bye", qos=1, retain=False))
    c.kill()
    assert w.expect_message().payload == b"bye"


def test_v5_disconnect_with_will_message_reason(broker, clients):
    t = "will/0x04"
    w = _watcher(clients, broker, t)
    c = _will_client(clients, broker, 5, t)
    c.send(R.disconnect(0x04, version=5))
    c.wait_closed(3)
    assert w.expect_message().payload == b"gone"


def test_will_sent_on_keepalive_timeout(broker, clients):
    t = "will/ka"
    w = _watcher(clients, broker, t)
    _will_client(clients, broker, 4, t, keepalive=1)
    t0 = time.monotonic()
    assert w.expect_message(timeout=6).payload == b"gone"
    assert time.monotonic() - t0 <= 4.0


def test_will_retain(broker, clients):
    t = "will/retain"
    c = _will_client(clients, broker, 4, t, payload=b"offline", retain=True)
    c.close()
    time.sleep(0.3)
    late = clients.v3(broker)
    late.subscribe(t, qos=1)
    m = late.expect_message()
    assert (m.payload, bool(m.retain)) == (b"offline", True)


def test_will_qos_downgraded_to_subscription(broker, clients):
    t = "will/qos"
    w = _watcher(clients, broker, t, qos=0)
    c = _will_client(clients, broker, 4, t, qos=2)
    c.close()
    m = w.expect_message()
    assert m.qos == 0


def test_v5_will_properties_forwarded(broker, clients):
    t = "will/props"
    w = _watcher(clients, broker, t)
    c = _will_client(clients, broker, 5, t, will_props=[
        (R.P_CONTENT_TYPE, "text/plain"), (R.P_USER_PROPERTY, ("k", "v")),
        (R.P_RESPONSE_TOPIC, "will/resp"), (R.P_PAYLOAD_FORMAT, 1)])
    c.close()
    m = w.expect_message()
    assert helpers.get_prop(m.properties, "ContentType") == "text/plain"
    assert helpers.get_prop(m.properties, "UserProperty") == [("k", "v")]
    assert helpers.get_prop(m.properties, "ResponseTopic") == "will/resp"
    assert helpers.get_prop(m.properties, "PayloadFormatIndicator") == 1


def test_v5_will_delay_interval(broker, clients):
    t = "will/delay"
    w = _watcher(clients, broker, t)
    c = _will_client(clients, broker, 5, t, will_props={R.P_WILL_DELAY: 2},
                     props={R.P_SESSION_EXPIRY: 60})
    c.close()
    t0 = time.monotonic()
    w.expect_no_message(1.3)
    m = w.expect_message(timeout=4)
    elapsed = time.monotonic() - t0
    assert m.payload == b"gone"
    assert 1.5 <= elapsed <= 4.5, "will sent after %.2fs, expected ~2s" % elapsed


def test_v5_will_delay_cancelled_by_reconnect(broker, clients):
    t = "will/cancel"
    w = _watcher(clients, broker, t)
    cid = helpers.unique("willc")
    c = _will_client(clients, broker, 5, t, cid=cid, will_props={R.P_WILL_DELAY: 2},
                     props={R.P_SESSION_EXPIRY: 60})
    c.close()
    time.sleep(0.5)
    again = clients.raw(broker, version=5)
    ack = again.connect(cid, version=5, clean=False, props={R.P_SESSION_EXPIRY: 60})
    assert ack.rc == 0 and ack.session_present
    w.expect_no_message(3.0)


def test_v5_will_delay_capped_by_session_expiry(broker, clients):
    """The will goes out when the session ends, even if the will delay is longer."""
    t = "will/cap"
    w = _watcher(clients, broker, t)
    c = _will_client(clients, broker, 5, t, will_props={R.P_WILL_DELAY: 30},
                     props={R.P_SESSION_EXPIRY: 0})
    c.close()
    assert w.expect_message(timeout=3).payload == b"gone"


def test_will_not_sent_twice(broker, clients):
    t = "will/once"
    w = _watcher(clients, broker, t)
    c = _will_client(clients, broker, 4, t)
    c.close()
    assert w.expect_message().payload == b"gone"
    w.expect_no_message(1.0)


def test_takeover_of_client_with_will_works(broker, clients):
    t = "will/takeover"
    cid = helpers.unique("wt")
    _will_client(clients, broker, 4, t, cid=cid)
    n = clients.raw(broker, version=4)
    assert n.connect(cid, version=4).rc == 0
    assert n.is_open()
