"""MQTT 5 Reason Strings: sent with refusing CONNACKs, DISCONNECTs and failing acks, and kept
off acks when the client asked for no problem information."""

import helpers
import rawmqtt as R


def test_connack_refusal_carries_reason_string(broker_factory, clients):
    b = broker_factory(["allow_anonymous false"])
    c = clients.raw(b, version=5)
    ack = c.connect(helpers.unique(), version=5)
    assert ack.rc == 0x87
    assert ack.props.get(R.P_REASON_STRING) == "not authorized"


def test_disconnect_carries_reason_string(broker_factory, clients):
    b = broker_factory(["max_packet_size 100"])
    c = clients.raw_connected(b, version=5)
    c.publish("reason/big", b"x" * 200, qos=0)
    seen = c.wait_closed(3)
    discs = [p for p in seen if p.type == R.DISCONNECT]
    assert discs and discs[0].rc == 0x95
    assert discs[0].props.get(R.P_REASON_STRING) == "packet too large"


def test_failed_puback_reason_string_follows_request_problem_info(broker_factory, clients):
    b = broker_factory(["message_size_limit 10"])
    c = clients.raw(b, version=5)
    assert c.connect(helpers.unique(), version=5).rc == 0
    c.publish("reason/quota", b"y" * 50, qos=1, pid=3)
    ack = c.expect(R.PUBACK)
    assert (ack.pid, ack.rc) == (3, 0x97)
    assert ack.props.get(R.P_REASON_STRING) == "quota exceeded"

    quiet = clients.raw(b, version=5)
    assert quiet.connect(helpers.unique(), version=5,
                         props={R.P_REQUEST_PROBLEM_INFO: 0}).rc == 0
    quiet.publish("reason/quota", b"y" * 50, qos=1, pid=4)
    ack = quiet.expect(R.PUBACK)
    assert (ack.pid, ack.rc) == (4, 0x97)
    assert ack.props.get(R.P_REASON_STRING) is None
