"""Debian's mosquitto_pub / mosquitto_sub (mosquitto-clients) against the broker."""

import shutil
import subprocess
import time

import pytest

import helpers

PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
VERSIONS = pytest.mark.parametrize("v", ["mqttv311", "mqttv5", "mqttv31"])


def pub(broker, topic, payload, qos=0, v="mqttv311", extra=(), timeout=10):
    args = [PUB, "-h", broker.host, "-p", str(broker.port), "-t", topic, "-q", str(qos),
            "-V", v, "-i", helpers.unique("mp")[:23]]
    args += ["-n"] if payload is None else ["-m", payload]
    r = subprocess.run(args + list(extra), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, "mosquitto_pub failed (%d): %s" % (r.returncode, r.stderr)
    return r


def sub_proc(broker, topic, count=1, qos=0, v="mqttv311", extra=(), wait=5):
    args = [SUB, "-h", broker.host, "-p", str(broker.port), "-t", topic, "-q", str(qos),
            "-V", v, "-C", str(count), "-W", str(wait), "-i", helpers.unique("ms")[:23]]
    return subprocess.Popen(args + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def until_received(broker, proc, topic, payload, qos, v, timeout=6):
    """Publishes every 0.2s until the subscriber exits (it exits after -C messages)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        pub(broker, topic, payload, qos, v)
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    try:
        out, err = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, "mosquitto_sub exit %r: %s" % (proc.returncode, err)
    return out


@VERSIONS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pub_sub(shared_broker, v, qos):
    t = "mc/%s/%d/%s" % (v, qos, helpers.unique())
    p = sub_proc(shared_broker, t, qos=qos, v=v, extra=["-v"])
    out = until_received(shared_broker, p, t, "hello-%d" % qos, qos, v)
    assert out.splitlines()[0] == "%s hello-%d" % (t, qos)


@pytest.mark.parametrize("v", ["mqttv311", "mqttv5"])
def test_retained(shared_broker, v):
    t = "mc/ret/%s/%s" % (v, helpers.unique())
    pub(shared_broker, t, "kept", qos=1, v=v, extra=["-r"])
    p = sub_proc(shared_broker, t, v=v)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert out.strip() == "kept"
    # clear it: a later bounded subscriber times out (exit code 27 = timeout in 2.0)
    pub(shared_broker, t, None, qos=1, v=v, extra=["-r"])
    p = sub_proc(shared_broker, t, v=v, wait=1)
    out, err = p.communicate(timeout=10)
    assert out == ""
    assert p.returncode != 0


@pytest.mark.parametrize("v", ["mqttv311", "mqttv5"])
def test_retained_wildcard_count(shared_broker, v):
    base = "mc/retw/%s/%s" % (v, helpers.unique())
    for i in range(3):
        pub(shared_broker, "%s/%d" % (base, i), "r%d" % i, qos=1, v=v, extra=["-r"])
    p = sub_proc(shared_broker, base + "/#", count=3, qos=1, v=v, extra=["-v"])
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert sorted(out.splitlines()) == ["%s/%d r%d" % (base, i, i) for i in range(3)]
    for i in range(3):
        pub(shared_broker, "%s/%d" % (base, i), None, qos=1, v=v, extra=["-r"])


def test_v5_format_and_content_type(shared_broker):
    t = "mc/props/" + helpers.unique()
    p = sub_proc(shared_broker, t, v="mqttv5", extra=["-F", "%t|%p"])
    out = until_received(shared_broker, p, t, "body", 1, "mqttv5")
    assert out.splitlines()[0] == "%s|body" % t
    # with a content type set by the publisher
    p = sub_proc(shared_broker, t, v="mqttv5", extra=["-F", "%C"])
    deadline = time.monotonic() + 6
    while p.poll() is None and time.monotonic() < deadline:
        pub(shared_broker, t, "x", 1, "mqttv5", extra=["-D", "publish", "content-type",
                                                       "text/plain"])
        try:
            p.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    out, err = p.communicate(timeout=3)
    assert p.returncode == 0, err
    assert out.splitlines()[0] == "text/plain"


def test_sub_timeout_exits_when_nothing_arrives(shared_broker):
    t0 = time.monotonic()
    p = sub_proc(shared_broker, "mc/silence/" + helpers.unique(), wait=1)
    out, err = p.communicate(timeout=10)
    assert out == ""
    assert p.returncode != 0
    assert time.monotonic() - t0 < 5


def test_many_messages_from_file(shared_broker, tmp_path):
    t = "mc/lines/" + helpers.unique()
    f = tmp_path / "lines.txt"
    f.write_text("".join("line-%d\n" % i for i in range(50)))
    p = sub_proc(shared_broker, t, count=50, qos=1, wait=8)
    time.sleep(0.5)  # let the subscriber subscribe
    r = subprocess.run([PUB, "-h", shared_broker.host, "-p", str(shared_broker.port), "-t", t,
                        "-q", "1", "-l"], input=f.read_text(), capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    out, err = p.communicate(timeout=12)
    assert p.returncode == 0, err
    assert out.splitlines() == ["line-%d" % i for i in range(50)]
