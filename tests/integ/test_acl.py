"""The topic ACL through the broker: every rule form, per-filter SUBACK codes, the delivery
check, and a list of bypass attempts that must all fail.

A denied PUBLISH is acknowledged with 0x87 in MQTT 5 and silently dropped in 3.1.1 (still
acknowledged, so the client does not resend it). A denied subscription gets 0x87 (MQTT 5) or
0x80 (3.1.1) in its SUBACK.
"""

import subprocess

import pytest

import helpers
import rawmqtt

ACL = """\
# anonymous clients
topic read public/#
topic write public/anon

user alice
topic readwrite alice/#
topic read shared/#
topic deny shared/secret

user bob
topic write shared/#
topic read bob/#

user reader
topic read #

user eve/x
topic read eve/#

pattern readwrite devices/%c/#
pattern read users/%u/inbox
"""

USERS = {"alice": "a-pw", "bob": "b-pw", "reader": "r-pw", "eve/x": "e-pw", "a#": "h-pw"}
DENIED_V5 = 0x87


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory):
    from conftest import _Registry
    d = tmp_path_factory.mktemp("acl")
    pw = str(d / "passwd")
    first = True
    for user, password in USERS.items():
        cmd = ["/usr/bin/mosquitto_passwd", "-b"] + (["-c"] if first else [])
        subprocess.run(cmd + [pw, user, password], check=True, capture_output=True)
        first = False
    acl = d / "acl"
    acl.write_text(ACL)
    reg = _Registry(tmp_path_factory, "acl")
    b = reg.make(["allow_anonymous true", "password_file " + pw, "acl_file %s" % acl])
    yield b
    reg.finish()


def login(broker, user=None, version=5, client_id=None):
    kw = {}
    if user is not None:
        kw = {"username": user, "password": USERS[user].encode()}
    c = broker.raw(version)
    ack = c.connect(client_id if client_id is not None else helpers.unique("acl"),
                    version=version, **kw)
    assert ack.rc == 0, "CONNACK 0x%02x for %r" % (ack.rc, user)
    return c


def suback(c, flt, qos=1, pid=1):
    c.send(rawmqtt.subscribe(pid, [(flt, qos)], None, c.version))
    return wait_ack(c, rawmqtt.SUBACK).codes[0]


def publish_rc(c, topic, payload=b"x", pid=5, props=None):
    """QoS 1 publish; returns the PUBACK reason code."""
    c.send(rawmqtt.publish(topic, payload, qos=1, pid=pid, props=props, version=c.version))
    return wait_ack(c, rawmqtt.PUBACK).rc


def wait_ack(c, ptype):
    """The next packet of ptype; PUBLISH packets read meanwhile are kept for received()."""
    while True:
        p = c.recv()
        if p.type == ptype:
            return p
        assert p.type == rawmqtt.PUBLISH, p
        stash(c, p)


def stash(c, p):
    if not hasattr(c, "stashed"):
        c.stashed = []
    c.stashed.append((p.topic, p.payload))
    if p.qos == 1:
        c.send(rawmqtt.puback(p.pid, version=c.version))


def received(c, timeout=0.5):
    out = getattr(c, "stashed", [])
    c.stashed = []
    while True:
        p = c.try_recv(timeout)
        if p is None:
            return out
        if p.type == rawmqtt.PUBLISH:
            out.append((p.topic, p.payload))
            if p.qos == 1:
                c.send(rawmqtt.puback(p.pid, version=c.version))
        else:
            raise AssertionError("unexpected %r" % p)


def test_anonymous_topic_rules(acl_broker):
    c = login(acl_broker)
    assert suback(c, "public/#") == 1
    assert suback(c, "alice/#", pid=2) == DENIED_V5
    assert publish_rc(c, "public/anon") == 0
    assert publish_rc(c, "public/other") == DENIED_V5  # read-only topic
    assert received(c) == [("public/anon", b"x")]
    c.close()


def test_user_block_and_v311_codes(acl_broker):
    a = login(acl_broker, "alice", version=4)
    assert suback(a, "alice/#") == 1
    assert suback(a, "bob/#", pid=2) == 0x80
    # 3.1.1: the denied publish is acknowledged but goes nowhere.
    b = login(acl_broker, "bob")
    assert suback(b, "bob/#") == 1
    assert publish_rc(a, "bob/x") == 0
    assert publish_rc(a, "alice/ok") == 0
    assert received(b) == []
    assert received(a) == [("alice/ok", b"x")]
    a.close()
    b.close()


def test_deny_wins_and_delivery_is_checked(acl_broker):
    """alice may subscribe shared/# although shared/secret is denied to her: the delivery
    check keeps the secret out, live and retained."""
    bob = login(acl_broker, "bob")
    bob.send(rawmqtt.publish("shared/secret", b"retained-secret", qos=1, pid=3, retain=True,
                             version=5))
    assert wait_ack(bob, rawmqtt.PUBACK).rc == 0
    bob.send(rawmqtt.publish("shared/open", b"retained-open", qos=1, pid=4, retain=True,
                             version=5))
    assert wait_ack(bob, rawmqtt.PUBACK).rc == 0
    a = login(acl_broker, "alice")
    assert suback(a, "shared/#") == 1
    assert received(a) == [("shared/open", b"retained-open")]
    assert publish_rc(bob, "shared/secret", b"live-secret") == 0
    assert publish_rc(bob, "shared/open", b"live-open") == 0
    assert received(a) == [("shared/open", b"live-open")]
    assert suback(a, "shared/secret", pid=2) == DENIED_V5
    a.close()
    bob.close()


def test_patterns_for_every_client(acl_broker):
    dev = login(acl_broker, client_id="dev1")
    other = login(acl_broker, client_id="dev2")
    assert suback(dev, "devices/dev1/#") == 1
    assert suback(other, "devices/dev2/#") == 1
    assert publish_rc(dev, "devices/dev1/state") == 0
    assert publish_rc(dev, "devices/dev2/cmd") == DENIED_V5
    assert received(dev) == [("devices/dev1/state", b"x")]
    assert received(other) == []
    # %u: a user reads its own inbox, wherever the pattern sits in the file.
    a = login(acl_broker, "alice")
    assert suback(a, "users/alice/inbox") == 1
    assert suback(a, "users/bob/inbox", pid=2) == DENIED_V5
    for c in (dev, other, a):
        c.close()


BYPASS_CLIENT_IDS = ["#", "+", "dev1/x", "+/#"]


@pytest.mark.parametrize("cid", BYPASS_CLIENT_IDS)
def test_bypass_client_id_with_wildcards_or_slash(acl_broker, cid):
    victim = login(acl_broker, client_id="victim")
    assert suback(victim, "devices/victim/#") == 1
    c = login(acl_broker, client_id=cid)
    for pid, flt in enumerate(["devices/#", "devices/+/cmd", "devices/%s" % cid,
                               "devices/%s/#" % cid], start=1):
        if flt.count("#") > 1 or "#/" in flt:
            continue  # not a valid filter at all
        assert suback(c, flt, pid=pid) == DENIED_V5, flt
    assert publish_rc(c, "devices/victim/cmd") == DENIED_V5
    assert received(victim) == []
    assert received(c) == []
    victim.close()
    c.close()


@pytest.mark.parametrize("user", ["eve/x", "a#"])
def test_bypass_username_with_wildcards_or_slash(acl_broker, user):
    alice = login(acl_broker, "alice")
    c = login(acl_broker, user)
    assert suback(c, "users/+/inbox") == DENIED_V5
    assert suback(c, "users/#", pid=2) == DENIED_V5
    if "#" not in user:
        assert suback(c, "users/%s/inbox" % user, pid=3) == DENIED_V5
    assert publish_rc(alice, "alice/ping") == 0  # alice's own topic: fine
    c.close()
    alice.close()


def test_bypass_wildcard_subscriptions(acl_broker):
    a = login(acl_broker, "alice")
    for pid, flt in enumerate(["#", "+/#", "+/+", "bob/+", "+/secret"], start=1):
        assert suback(a, flt, pid=pid) == DENIED_V5, flt
    a.close()


def test_bypass_sys(acl_broker):
    r = login(acl_broker, "reader")
    assert suback(r, "#") == 1
    assert suback(r, "$SYS/#", pid=2) == DENIED_V5
    assert suback(r, "$SYS/broker/uptime", pid=3) == DENIED_V5
    assert [t for t, _ in received(r, 1.0) if t.startswith("$")] == []
    r.close()


def test_bypass_shared_subscriptions(acl_broker):
    a = login(acl_broker, "alice")
    assert suback(a, "$share/g/bob/#") == DENIED_V5
    assert suback(a, "$share/g/#", pid=2) == DENIED_V5
    assert suback(a, "$share/g/alice/#", pid=3) == 1
    a.close()


def test_bypass_topic_alias(acl_broker):
    bob = login(acl_broker, "bob")
    assert suback(bob, "bob/#") == 1
    a = login(acl_broker, "alice")
    alias = {rawmqtt.P_TOPIC_ALIAS: 1}
    assert publish_rc(a, "alice/x", b"1", props=alias) == 0
    assert publish_rc(a, "", b"2", pid=6, props=alias) == 0  # alias -> alice/x
    # Re-map the alias to a denied topic, then use the alias alone.
    assert publish_rc(a, "bob/x", b"3", pid=7, props=alias) == DENIED_V5
    assert publish_rc(a, "", b"4", pid=8, props=alias) == DENIED_V5
    assert received(bob) == []
    a.close()
    bob.close()


def test_will_to_denied_topic_is_dropped(acl_broker):
    bob = login(acl_broker, "bob")
    assert suback(bob, "bob/#") == 1
    assert suback(bob, "shared/#", pid=2) == DENIED_V5  # bob may only write there
    a = acl_broker.raw(5)
    ack = a.connect("will-alice", version=5, username="alice", password=b"a-pw",
                    will={"topic": "bob/will", "payload": b"denied will", "qos": 1})
    assert ack.rc == 0
    a.close()  # abnormal close: the will would go out now
    watcher = login(acl_broker, "alice")
    assert suback(watcher, "alice/#") == 1
    b2 = acl_broker.raw(5)
    ack = b2.connect("will-alice2", version=5, username="alice", password=b"a-pw",
                     will={"topic": "alice/will", "payload": b"allowed will", "qos": 1})
    assert ack.rc == 0
    b2.close()
    assert received(watcher, 1.0) == [("alice/will", b"allowed will")]
    assert received(bob) == []
    watcher.close()
    bob.close()
