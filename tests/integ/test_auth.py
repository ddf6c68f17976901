"""Authentication: password files written by Debian's mosquitto_passwd and by the argon2 CLI,
allow_anonymous, clientid_prefixes, and CONNECT handling while a password is being checked.

Return codes follow the spec: a wrong password is "bad user name or password" (3.1.1 code 4,
MQTT 5 0x86); a refused anonymous client or client id prefix is "not authorized" (5, 0x87).
"""

import os
import subprocess

import pytest

import helpers
import rawmqtt

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def passwd_file(tmp_path, users, hash_kind=None):
    """A password file made by Debian's mosquitto_passwd: users is {name: password}."""
    path = str(tmp_path / "passwd")
    first = True
    for user, pw in users.items():
        cmd = [MOSQUITTO_PASSWD, "-b"]
        if first:
            cmd.append("-c")
        if hash_kind:
            cmd += ["-H", hash_kind]
        subprocess.run(cmd + [path, user, pw], check=True, capture_output=True)
        first = False
    return path


def argon2_line(user, password):
    out = subprocess.run(["argon2", "saltysaltsalt", "-id", "-t", "2", "-m", "12", "-p", "1",
                          "-e"], input=password.encode(), capture_output=True, check=True)
    return "%s:%s\n" % (user, out.stdout.decode().strip())


def raw_connack(broker, version, **kw):
    c = broker.raw(version)
    try:
        return c.connect(helpers.unique("a"), version=version, **kw).rc
    finally:
        c.close()


@pytest.mark.parametrize("hash_kind", [None, "sha512-pbkdf2", "sha512"])
def test_mosquitto_passwd_file_unchanged(broker_factory, tmp_path, hash_kind):
    path = passwd_file(tmp_path, {"alice": "wonderland", "bob": "builder"}, hash_kind)
    with open(path) as f:
        text = f.read()
    assert ("$6$" if hash_kind == "sha512" else "$7$") in text
    b = broker_factory(["allow_anonymous false", "password_file " + path])
    assert raw_connack(b, 4, username="alice", password=b"wonderland") == 0
    assert raw_connack(b, 4, username="bob", password=b"builder") == 0
    assert raw_connack(b, 4, username="alice", password=b"builder") == 4
    assert raw_connack(b, 5, username="alice", password=b"wrong") == 0x86
    assert raw_connack(b, 4, username="mallory", password=b"wonderland") == 4
    assert raw_connack(b, 4, username="alice") == 4  # no password at all
    assert raw_connack(b, 4) == 5  # anonymous
    assert raw_connack(b, 5) == 0x87
    with open(path) as f:
        assert f.read() == text, "the broker must never rewrite the password file"


def test_argon2id_line_from_cli(broker_factory, tmp_path):
    path = tmp_path / "passwd"
    path.write_text("# made with the argon2 CLI\n\n" + argon2_line("carol", "s3cret!"))
    b = broker_factory(["password_file %s" % path])
    assert raw_connack(b, 4, username="carol", password=b"s3cret!") == 0
    assert raw_connack(b, 5, username="carol", password=b"s3cret") == 0x86


def test_paho_clients_with_passwords(broker_factory, clients, tmp_path, version):
    path = passwd_file(tmp_path, {"dev": "pw-1"})
    b = broker_factory(["allow_anonymous false", "password_file " + path])
    sub = clients.paho(b, version=version, username="dev", password="pw-1")
    sub.subscribe("auth/t", 1)
    pub = clients.paho(b, version=version, username="dev", password="pw-1")
    pub.publish("auth/t", b"hello", qos=1)
    assert sub.expect_message().payload == b"hello"
    bad = clients.paho(b, version=version, username="dev", password="nope", connect=False)
    bad.connect(expect_rc=134 if version == helpers.V5 else 4)


def test_allow_anonymous_true_with_password_file(broker_factory, tmp_path):
    path = passwd_file(tmp_path, {"alice": "wonderland"})
    b = broker_factory(["allow_anonymous true", "password_file " + path])
    assert raw_connack(b, 4) == 0
    assert raw_connack(b, 4, username="alice", password=b"wonderland") == 0
    # A user name is always checked when there is a password file.
    assert raw_connack(b, 4, username="alice", password=b"x") == 4
    assert raw_connack(b, 4, username="eve", password=b"x") == 4


def test_default_denies_anonymous_on_configured_listener(broker_factory):
    b = broker_factory([], start=False)
    with open(b.config) as f:
        lines = [l for l in f.read().splitlines() if not l.startswith("allow_anonymous")]
    with open(b.config, "w") as f:
        f.write("\n".join(lines) + "\n")
    b.start()
    assert raw_connack(b, 4) == 5
    # Without a password file nobody can prove a user name either.
    assert raw_connack(b, 4, username="alice", password=b"x") == 5


def test_clientid_prefixes(broker_factory):
    b = broker_factory(["clientid_prefixes dev-"])
    for version, refused in ((4, 5), (5, 0x87)):
        c = b.raw(version)
        assert c.connect("dev-42", version=version).rc == 0
        c.close()
        c = b.raw(version)
        assert c.connect("other-42", version=version).rc == refused
        assert c.wait_closed() == []
        c.close()
    # An assigned client id must carry the prefix too (auto_id_prefix decides it).
    assert raw_connack(b, 5) == 0x87
    b2 = broker_factory(["clientid_prefixes dev-", "auto_id_prefix dev-auto-"])
    c = b2.raw(5)
    ack = c.connect("", version=5)
    assert ack.rc == 0
    assigned = ack.props.get(rawmqtt.P_ASSIGNED_CLIENT_ID)
    assigned = assigned.decode() if isinstance(assigned, bytes) else assigned
    assert assigned.startswith("dev-auto-")
    c.close()


def test_packets_pipelined_behind_connect_wait_for_the_password(broker_factory, tmp_path):
    """CONNECT, SUBSCRIBE and PUBLISH in one write: the broker answers them in order once the
    password check (on the thread pool) has admitted the client."""
    path = tmp_path / "passwd"
    path.write_text(argon2_line("pipe", "line"))
    b = broker_factory(["password_file %s" % path])
    c = b.raw(4)
    c.send(rawmqtt.connect("pipelined", username="pipe", password=b"line") +
           rawmqtt.subscribe(7, [("pipe/t", 1)]) +
           rawmqtt.publish("pipe/t", b"after-connect", qos=1, pid=9))
    assert c.expect(rawmqtt.CONNACK).rc == 0
    got = [c.recv() for _ in range(3)]
    kinds = sorted(p.type for p in got)
    assert kinds == sorted([rawmqtt.SUBACK, rawmqtt.PUBACK, rawmqtt.PUBLISH]), got
    pub = [p for p in got if p.type == rawmqtt.PUBLISH][0]
    assert pub.payload == b"after-connect"
    c.close()
    # Refused: nothing behind the CONNECT is acted on.
    watcher = b.raw(4)
    assert watcher.connect("watch", username="pipe", password=b"line").rc == 0
    watcher.subscribe([("pipe/#", 0)])
    c = b.raw(4)
    c.send(rawmqtt.connect("pipelined2", username="pipe", password=b"wrong") +
           rawmqtt.publish("pipe/leak", b"must not pass", qos=0))
    assert c.expect(rawmqtt.CONNACK).rc == 4
    c.wait_closed()
    assert watcher.try_recv(0.5) is None
    watcher.close()


def test_many_concurrent_password_checks(broker_factory, tmp_path):
    """Checks overlap on the thread pool; each client gets its own answer."""
    path = passwd_file(tmp_path, {"u%d" % i: "p%d" % i for i in range(4)})
    b = broker_factory(["password_file " + path])
    socks = []
    for i in range(40):
        c = b.raw(4)
        good = i % 2 == 0
        c.send(rawmqtt.connect("cc%d" % i, username="u%d" % (i % 4),
                               password=("p%d" % (i % 4) if good else "bad").encode()))
        socks.append((c, good))
    for c, good in socks:
        assert c.expect(rawmqtt.CONNACK).rc == (0 if good else 4)
        c.close()


def test_client_leaves_during_password_check(broker_factory, tmp_path):
    path = tmp_path / "passwd"
    path.write_text(argon2_line("gone", "soon"))
    b = broker_factory(["password_file %s" % path])
    for i in range(10):
        c = b.raw(4)
        c.send(rawmqtt.connect("gone%d" % i, username="gone", password=b"soon"))
        c.close()
    assert raw_connack(b, 4, username="gone", password=b"soon") == 0


def test_bad_password_file_is_refused_at_start(tmp_path, broker_factory):
    path = tmp_path / "passwd"
    path.write_text(argon2_line("alice", "pw") + "bob-without-hash\n")
    b = broker_factory(["password_file %s" % path], start=False)
    from conftest import BIN
    r = subprocess.run([BIN, "-c", b.config, "-t"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "%s:2:" % path in r.stderr, r.stderr
    with pytest.raises(AssertionError):
        b.start()
    assert "%s:2:" % path in b.stderr()
