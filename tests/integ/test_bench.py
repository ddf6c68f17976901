"""shoal-bench against a local node: each subcommand runs for 2 seconds and its reported
counts must agree with what the broker and the other side saw (not how fast they were)."""

import json
import os
import subprocess
import time

import helpers

BENCH = os.environ.get("SHOAL_BENCH") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "build", "shoal-bench")


def run(broker, mode, *args, wait=True, duration=2):
    cmd = [BENCH, mode, "-h", "127.0.0.1", "-p", str(broker.port), "--json", "--quiet",
           "--duration", str(duration)] + [str(a) for a in args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return p
    return finish(p)


def finish(p, timeout=30):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err.decode()[-500:]
    lines = [x for x in out.decode().splitlines() if x.startswith("{")]
    assert lines, "no JSON report: %r" % out[-300:]
    return json.loads(lines[-1])


def test_conn_holds_connections(broker, clients):
    r = run(broker, "conn", "-c", 50, "-R", 500)
    assert r["mode"] == "conn"
    assert r["connected"] == 50 and r["conn_errors"] == 0


def test_pub_counts_match_a_subscriber(broker, clients):
    sub = clients.v3(broker)
    t = "bench/it/" + helpers.unique()
    sub.subscribe(t + "/#", qos=1)
    r = run(broker, "pub", "-c", 4, "-t", t + "/%i", "-q", 1, "-I", 10, "-L", 50, "-s", 32)
    assert r["sent"] == 200 and r["acked"] == 200
    got = sub.expect_messages(200, timeout=10)
    assert all(len(m.payload) == 32 for m in got)


def test_sub_counts_and_detects_no_loss(broker, clients):
    t = "bench/sq/" + helpers.unique()
    s = run(broker, "sub", "-c", 3, "-t", t, "-q", 1, "--payload-hdrs", "ts,cnt64", wait=False,
            duration=4)
    time.sleep(1.0)
    r = run(broker, "pub", "-c", 2, "-t", t, "-q", 1, "-I", 5, "-L", 100, "-s", 32,
            "--payload-hdrs", "ts,cnt64")
    assert r["sent"] == 200
    rs = finish(s)
    assert rs["subscribed"] == 3
    assert rs["recv"] == 600  # 200 messages to each of 3 subscribers
    seq = rs["seq"]
    assert seq["lost"] == 0 and seq["duplicates"] == 0
    assert rs["latency_us"]["count"] == 600


def test_bad_flag_is_a_clear_error():
    p = subprocess.run([BENCH, "pub", "--no-such-flag"], capture_output=True)
    assert p.returncode == 1
    assert p.stderr
