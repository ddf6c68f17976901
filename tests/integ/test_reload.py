"""Reloading the password and ACL files: on SIGHUP and when a file changes, through the
symbolic links Kubernetes uses for mounted Secrets, keeping connected clients as they are and
keeping the previous rules when a new file is broken."""

import os
import signal
import subprocess
import time

import pytest

import helpers
import rawmqtt


def write_passwd(path, users):
    """users: {name: password}, written through mosquitto_passwd into a fresh file at path."""
    tmp = str(path) + ".new"
    first = True
    for user, pw in users.items():
        cmd = ["/usr/bin/mosquitto_passwd", "-b"] + (["-c"] if first else [])
        subprocess.run(cmd + [tmp, user, pw], check=True, capture_output=True)
        first = False
    os.replace(tmp, str(path))


def connack(broker, user, pw, version=4):
    c = broker.raw(version)
    try:
        return c.connect(helpers.unique("r"), version=version, username=user,
                         password=pw.encode()).rc
    finally:
        c.close()


def wait_for(pred, timeout=6.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("%s not reached within %.0fs" % (what, timeout))


def test_password_reload_on_sighup_keeps_clients(broker_factory, tmp_path):
    pw = tmp_path / "passwd"
    write_passwd(pw, {"old": "one"})
    b = broker_factory(["password_file %s" % pw])
    held = b.raw(4)
    assert held.connect("held", username="old", password=b"one").rc == 0
    write_passwd(pw, {"new": "two"})
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: connack(b, "new", "two") == 0, what="new user accepted")
    assert connack(b, "old", "one") == 4
    # The client admitted under the old file is neither dropped nor re-checked.
    assert held.is_open()
    held.close()


def test_password_file_change_is_noticed_without_signal(broker_factory, tmp_path):
    pw = tmp_path / "passwd"
    write_passwd(pw, {"u": "first"})
    b = broker_factory(["password_file %s" % pw])
    assert connack(b, "u", "first") == 0
    write_passwd(pw, {"u": "second"})
    wait_for(lambda: connack(b, "u", "second") == 0, what="changed password accepted")
    assert connack(b, "u", "first") == 4


def test_broken_reload_keeps_previous_state(broker_factory, tmp_path):
    pw = tmp_path / "passwd"
    write_passwd(pw, {"u": "pw"})
    acl = tmp_path / "acl"
    acl.write_text("user u\ntopic readwrite ok/#\n")
    b = broker_factory(["password_file %s" % pw, "acl_file %s" % acl])
    pw.write_text("u:$7$101$not-base64!$x\n")
    acl.write_text("user u\ntopic readwrite ok/#\nbogus line here\n")
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "%s:1:" % pw in b.stderr() and "%s:3:" % acl in b.stderr(),
             what="both reload errors logged")
    assert connack(b, "u", "pw") == 0
    c = b.raw(5)
    assert c.connect("acl-check", version=5, username="u", password=b"pw").rc == 0
    assert c.subscribe([("ok/#", 0)]).codes == [0]
    assert c.subscribe([("other/#", 0)], pid=2).codes == [0x87]
    c.close()


def test_acl_reload_applies_to_next_check(broker_factory, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite a/#\n")
    b = broker_factory(["allow_anonymous true", "acl_file %s" % acl])
    sub = b.raw(5)
    assert sub.connect("sub", version=5).rc == 0
    assert sub.subscribe([("a/#", 0)]).codes == [0]
    pub = b.raw(5)
    assert pub.connect("pub", version=5).rc == 0
    pub.publish("a/1", b"before")
    assert sub.recv().payload == b"before"
    acl.write_text("topic readwrite a/#\ntopic deny a/secret\n")
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "acl file reloaded" in b.stderr(), what="acl reloaded")
    # The live subscription stays, but each delivery is judged by the new rules.
    pub.publish("a/secret", b"hidden")
    pub.publish("a/2", b"after")
    assert sub.recv().payload == b"after"
    assert sub.is_open() and pub.is_open()
    sub.close()
    pub.close()


def test_kubernetes_style_symlink_swap(broker_factory, tmp_path):
    """A mounted Secret: passwd -> ..data/passwd, ..data -> ..2024_v1; an update makes a new
    versioned directory and swaps ..data atomically."""
    mount = tmp_path / "secret"
    v1 = mount / "..v1"
    v1.mkdir(parents=True)
    write_passwd(v1 / "passwd", {"k8s": "v1"})
    os.chmod(str(v1 / "passwd"), 0o400)
    os.symlink("..v1", str(mount / "..data"))
    os.symlink("..data/passwd", str(mount / "passwd"))
    b = broker_factory(["password_file %s" % (mount / "passwd")])
    assert connack(b, "k8s", "v1") == 0
    v2 = mount / "..v2"
    v2.mkdir()
    write_passwd(v2 / "passwd", {"k8s": "v2"})
    os.chmod(str(v2 / "passwd"), 0o400)
    os.symlink("..v2", str(mount / "..data_tmp"))
    os.replace(str(mount / "..data_tmp"), str(mount / "..data"))
    wait_for(lambda: connack(b, "k8s", "v2") == 0, what="rotated secret used")
    assert connack(b, "k8s", "v1") == 4
    # Read-only files are never chmod'ed.
    assert os.stat(str(v2 / "passwd")).st_mode & 0o777 == 0o400
