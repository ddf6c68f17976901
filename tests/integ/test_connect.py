"""CONNECT / CONNACK for MQTT 3.1, 3.1.1 and 5.0, client identifiers, anonymous access,
keepalive enforcement and PINGREQ."""

import time

import pytest

import helpers
import rawmqtt as R
from helpers import V31, V311, V5


@pytest.mark.parametrize("level", [3, 4, 5], ids=["3.1", "3.1.1", "5.0"])
def test_raw_connect_each_protocol_level(shared_broker, clients, level):
    c = clients.raw(shared_broker, version=level)
    ack = c.connect(helpers.unique("lvl"), version=level)
    assert ack.type == R.CONNACK
    assert ack.rc == 0
    assert not ack.session_present
    if level != 5:
        assert len(ack.body) == 2, "v3 CONNACK has exactly 2 bytes: %r" % ack.body
    assert c.is_open()
    c.send(R.disconnect(version=level))
    c.wait_closed(3)


@pytest.mark.parametrize("proto", [V31, V311, V5], ids=["paho-3.1", "paho-3.1.1", "paho-5"])
def test_paho_connect_roundtrip(shared_broker, clients, proto):
    c = clients.paho(shared_broker, version=proto)
    topic = "connect/rt/%s" % c.client_id
    c.subscribe(topic, qos=1)
    c.publish(topic, b"hello", qos=1)
    m = c.expect_message()
    assert (m.topic, m.payload) == (topic, b"hello")


def test_v5_empty_client_id_gets_assigned_identifier(shared_broker, clients):
    c = clients.raw(shared_broker, version=5)
    ack = c.connect("", version=5, clean=True)
    assert ack.rc == 0
    assigned = ack.props.get(R.P_ASSIGNED_CLIENT_ID)
    assert assigned, "CONNACK lacks Assigned Client Identifier: %r" % ack
    assert assigned.startswith("auto-"), "auto_id_prefix defaults to auto-: %r" % assigned
    # Two anonymous clients get different identifiers.
    c2 = clients.raw(shared_broker, version=5)
    ack2 = c2.connect("", version=5, clean=True)
    assert ack2.rc == 0
    assert ack2.props.get(R.P_ASSIGNED_CLIENT_ID) not in (None, assigned)
    assert c.is_open() and c2.is_open()


def test_v5_empty_client_id_with_paho(shared_broker, clients):
    c = clients.v5(shared_broker, "")
    assert helpers.get_prop(c.connack_props, "AssignedClientIdentifier")
    t = "connect/v5empty/" + helpers.unique()
    c.subscribe(t)
    c.publish(t, b"x")
    assert c.expect_message().payload == b"x"


def test_v311_empty_client_id_with_clean_session_accepted(shared_broker, clients):
    c = clients.raw(shared_broker, version=4)
    ack = c.connect("", version=4, clean=True)
    assert ack.rc == 0
    assert c.is_open()


def test_v311_empty_client_id_without_clean_session_rejected(shared_broker, clients):
    c = clients.raw(shared_broker, version=4)
    ack = c.connect("", version=4, clean=False)
    assert ack.rc == 2, "expected 'identifier rejected' (2), got %r" % ack
    c.wait_closed(3)


def test_v31_empty_client_id_rejected(shared_broker, clients):
    # MQTT 3.1 requires 1-23 characters.
    c = clients.raw(shared_broker, version=3)
    ack = c.connect("", version=3, clean=True)
    assert ack.rc == 2
    c.wait_closed(3)


def test_long_client_id_accepted_in_v311(shared_broker, clients):
    cid = "long-" + "x" * 200
    c = clients.raw(shared_broker, version=4)
    assert c.connect(cid, version=4).rc == 0


def test_zero_length_clientid_disallowed(broker_factory, clients):
    b = broker_factory(["allow_zero_length_clientid false"])
    c = clients.raw(b, version=4)
    assert c.connect("", version=4, clean=True).rc == 2
    c.wait_closed(3)
    c5 = clients.raw(b, version=5)
    ack = c5.connect("", version=5, clean=True)
    # 0x85 (Client Identifier not valid) is the spec's code; mosquitto 2.0 sends 0x80.
    assert ack.rc in (0x85, 0x80), "expected 0x85 Client Identifier not valid, got %r" % ack
    c5.wait_closed(3)
    # a non-empty id is still fine
    assert clients.raw(b, version=4).connect("named", version=4).rc == 0


def test_anonymous_refused_without_password_file(broker_factory, clients):
    b = broker_factory(["allow_anonymous false"])
    c = clients.raw(b, version=4)
    ack = c.connect(helpers.unique(), version=4)
    assert ack.rc == 5, "v3 expects 5 (not authorised), got %r" % ack
    c.wait_closed(3)
    c5 = clients.raw(b, version=5)
    ack5 = c5.connect(helpers.unique(), version=5)
    assert ack5.rc == 0x87, "v5 expects 0x87 (not authorized), got %r" % ack5
    c5.wait_closed(3)
    # With a username but no password file, still refused.
    c3 = clients.raw(b, version=4)
    ack3 = c3.connect(helpers.unique(), version=4, username="u", password=b"p")
    assert ack3.rc in (4, 5)
    c3.wait_closed(3)


def test_username_password_accepted_when_anonymous_allowed(shared_broker, clients):
    c = clients.paho(shared_broker, username="someone", password="secret")
    assert c.connack_rc == 0


def test_connack_v5_default_properties(shared_broker, clients):
    c = clients.raw(shared_broker, version=5)
    ack = c.connect(helpers.unique(), version=5)
    assert ack.rc == 0
    p = ack.props
    # mosquitto 2 defaults: max_topic_alias 10; retain, wildcards, sub ids, shared subs on.
    assert p.get(R.P_TOPIC_ALIAS_MAXIMUM) == 10
    for pid in (R.P_RETAIN_AVAILABLE, R.P_WILDCARD_SUB_AVAILABLE, R.P_SUB_ID_AVAILABLE,
                R.P_SHARED_SUB_AVAILABLE):
        assert p.get(pid, 1) == 1, "property 0x%02x says unavailable" % pid
    assert p.get(R.P_MAXIMUM_QOS, 2) == 2
    if R.P_RECEIVE_MAXIMUM in p:
        assert p.get(R.P_RECEIVE_MAXIMUM) >= 1


def test_pingreq_pingresp(shared_broker, clients):
    for level in (4, 5):
        c = clients.raw_connected(shared_broker, version=level)
        c.send(R.pingreq())
        p = c.recv(3)
        assert p.type == R.PINGRESP and p.body == b""


def test_keepalive_enforced(broker_factory, clients):
    b = broker_factory()
    c = clients.raw(b, version=4)
    assert c.connect(helpers.unique("ka"), version=4, keepalive=1).rc == 0
    t0 = time.monotonic()
    c.wait_closed(6)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed <= 3.5, "closed after %.2fs, expected ~1.5s" % elapsed


def test_keepalive_respected_while_pinging(broker_factory, clients):
    b = broker_factory()
    c = clients.raw(b, version=4)
    assert c.connect(helpers.unique("ka"), version=4, keepalive=1).rc == 0
    for _ in range(6):
        time.sleep(0.5)
        c.send(R.pingreq())
        assert c.expect(R.PINGRESP, 2).type == R.PINGRESP


def test_keepalive_zero_means_no_timeout(broker_factory, clients):
    b = broker_factory()
    c = clients.raw(b, version=4)
    assert c.connect(helpers.unique("ka0"), version=4, keepalive=0).rc == 0
    assert c.try_recv(2.5) is None
    assert c.is_open()


def test_v5_server_keep_alive_capped_by_max_keepalive(broker_factory, clients):
    b = broker_factory(["max_keepalive 10"])
    c = clients.raw(b, version=5)
    ack = c.connect(helpers.unique(), version=5, keepalive=60)
    assert ack.rc == 0
    assert ack.props.get(R.P_SERVER_KEEP_ALIVE) == 10, ack
    # A keepalive within the limit is left alone (no property, or the same value).
    c2 = clients.raw(b, version=5)
    ack2 = c2.connect(helpers.unique(), version=5, keepalive=5)
    assert ack2.rc == 0
    assert ack2.props.get(R.P_SERVER_KEEP_ALIVE, 5) == 5


def test_connect_sent_after_a_pause(shared_broker, clients):
    """A client may take a moment before sending CONNECT."""
    c = clients.raw(shared_broker, version=4)
    time.sleep(0.5)
    assert c.connect(helpers.unique(), version=4).rc == 0


def test_auto_id_prefix(broker_factory, clients):
    b = broker_factory(["auto_id_prefix shoal-"])
    c = clients.raw(b, version=5)
    ack = c.connect("", version=5)
    assert ack.props.get(R.P_ASSIGNED_CLIENT_ID, "").startswith("shoal-"), ack
