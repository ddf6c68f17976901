"""TLS listeners with a PKI made by the openssl CLI (pki.py): server certificates (RSA and
ECDSA), client certificates (good, expired, revoked, from a rogue CA), CRL reload without a
restart, certificate identities as user names, minimum versions, resumption, and MQTT over
secure WebSockets."""

import os
import shutil
import socket
import ssl
import time

import pytest

import helpers
import pki as pkimod
import rawmqtt


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return pkimod.make_pki(str(tmp_path_factory.mktemp("pki")))


def tls_lines(pki, ec=False, cafile=True, extra=()):
    kind = "server_ec" if ec else "server"
    lines = ["certfile " + pki[kind + "_crt"], "keyfile " + pki[kind + "_key"]]
    if cafile:
        lines.append("cafile " + pki["ca_crt"])
    return lines + list(extra)


def client_ctx(pki, client=None, max_version=None, min_version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki["ca_crt"])
    if client:
        ctx.load_cert_chain(pki[client + "_crt"], pki[client + "_key"])
    if max_version:
        ctx.maximum_version = max_version
    if min_version:
        ctx.minimum_version = min_version
    return ctx


def tls_connack(port, ctx, client_id=None, version=4, session=None, **kw):
    """CONNECT over TLS. Returns (CONNACK rc or "refused", ssl socket or None)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        s.sendall(rawmqtt.connect(client_id or helpers.unique("tls"), version=version, **kw))
        data = b""
        while len(data) < 4:
            chunk = s.recv(64)
            if not chunk:
                return "refused", None
            data += chunk
    except (ssl.SSLError, OSError):
        raw.close()
        return "refused", None
    assert data[0] == 0x20, data
    return data[3], s


def connack_only(port, ctx, **kw):
    rc, s = tls_connack(port, ctx, **kw)
    if s is not None:
        s.close()
    return rc


@pytest.fixture
def tls_broker(broker_factory, pki):
    """Listener 0: plain; 1: TLS, optional client certificates; 2: TLS requiring one, with the
    CRL; 3: ECDSA server key."""
    return broker_factory(listeners=4, listener_opts=[
        [], tls_lines(pki),
        tls_lines(pki, extra=["require_certificate true", "crlfile " + pki["crl"]]),
        tls_lines(pki, ec=True)])


def test_tls_and_plain_interoperate(tls_broker, clients, pki, version):
    b = tls_broker
    tls = {"ca_certs": pki["ca_crt"]}
    sub = clients.paho(b, version=version, port=b.ports[1], tls=tls)
    sub.subscribe("tls/#", 1)
    ec = clients.paho(b, version=version, port=b.ports[3], tls=tls)
    ec.subscribe("tls/#", 1)
    pub = clients.paho(b, version=version)
    pub.publish("tls/x", b"secret", qos=1)
    big = os.urandom(200 * 1024)
    pub.publish("tls/big", big, qos=1)
    for c in (sub, ec):
        got = {m.topic: m.payload for m in c.expect_messages(2, timeout=10)}
        assert got == {"tls/x": b"secret", "tls/big": big}


def test_client_certificates(tls_broker, pki):
    b = tls_broker
    port = b.ports[2]
    assert connack_only(port, client_ctx(pki, "good")) == 0
    assert connack_only(port, client_ctx(pki)) == "refused"
    assert connack_only(port, client_ctx(pki, "rogue")) == "refused"
    assert connack_only(port, client_ctx(pki, "expired")) == "refused"
    assert connack_only(port, client_ctx(pki, "revoked")) == "refused"
    # Without require_certificate a client may come without one, but not with a bad one.
    assert connack_only(b.ports[1], client_ctx(pki)) == 0
    assert connack_only(b.ports[1], client_ctx(pki, "rogue")) == "refused"
    deadline = time.monotonic() + 5
    want = ["reason=no-certificate", "reason=unknown-ca", "reason=expired", "reason=revoked"]
    while time.monotonic() < deadline and not all(w in b.stderr() for w in want):
        time.sleep(0.1)
    for w in want:
        assert w in b.stderr(), w


def test_plain_mqtt_on_tls_port_is_refused(tls_broker):
    c = tls_broker.raw(4, port=tls_broker.ports[1])
    c.send(rawmqtt.connect("plain-on-tls"))
    c.wait_closed()
    c.close()
    assert tls_broker.raw(4).connect("still-up").rc == 0


def test_crl_reload_revokes_without_restart(broker_factory, pki, tmp_path):
    crl = tmp_path / "crl.pem"
    shutil.copy(pki["crl"], str(crl))
    b = broker_factory(listener_opts=[tls_lines(
        pki, extra=["require_certificate true", "crlfile %s" % crl])])
    ctx = client_ctx(pki, "later")
    rc, held = tls_connack(b.port, ctx, client_id="held-later")
    assert rc == 0
    tmp = str(crl) + ".new"
    shutil.copy(pkimod.revoke(pki, "later"), tmp)
    os.replace(tmp, str(crl))  # noticed by its new inode and mtime, no signal needed
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and connack_only(b.port, ctx) != "refused":
        time.sleep(0.2)
    assert connack_only(b.port, ctx) == "refused"
    assert connack_only(b.port, client_ctx(pki, "good")) == 0
    # Connected clients are not re-checked: the one admitted before the reload stays.
    held.sendall(rawmqtt.pingreq())
    assert held.recv(2) == b"\xd0\x00"
    held.close()


def test_use_identity_and_subject_as_username(broker_factory, pki, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user good-client\ntopic readwrite good/#\n\n"
                   "user CN=good-client,O=Shoal Test\ntopic readwrite subject/#\n")
    b = broker_factory(["acl_file %s" % acl], listeners=2, listener_opts=[
        tls_lines(pki, extra=["require_certificate true", "use_identity_as_username true"]),
        tls_lines(pki, extra=["require_certificate true", "use_subject_as_username true"])])
    for port, allowed, denied in ((b.ports[0], "good/x", "subject/x"),
                                  (b.ports[1], "subject/x", "good/x")):
        # The CONNECT's own user name and password play no part.
        rc, s = tls_connack(port, client_ctx(pki, "good"), version=5, username="admin",
                            password=b"whatever")
        assert rc == 0
        s.sendall(rawmqtt.subscribe(1, [(allowed, 0), (denied, 0)], version=5))
        data = s.recv(64)
        assert data[0] == 0x90 and list(data[-2:]) == [0x00, 0x87], data
        s.close()


def test_tls_version_minimum(broker_factory, pki):
    b = broker_factory(listener_opts=[tls_lines(pki, extra=["tls_version tlsv1.3"])])
    assert connack_only(b.port, client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)) == \
        "refused"
    assert connack_only(b.port, client_ctx(pki)) == 0


def test_session_resumption(tls_broker, pki):
    ctx = client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)
    rc, s = tls_connack(tls_broker.ports[1], ctx)
    assert rc == 0
    session = s.session
    s.close()
    rc, s = tls_connack(tls_broker.ports[1], ctx, session=session)
    assert rc == 0 and s.session_reused
    s.close()


def test_capath(broker_factory, pki, tmp_path):
    capath = pkimod.make_capath(str(tmp_path), certs=[pki["ca_crt"]])
    b = broker_factory(listener_opts=[tls_lines(
        pki, cafile=False, extra=["capath " + capath, "require_certificate true"])])
    assert connack_only(b.port, client_ctx(pki, "good")) == 0
    assert connack_only(b.port, client_ctx(pki, "rogue")) == "refused"


def test_websockets_over_tls(broker_factory, clients, pki, version):
    b = broker_factory(listeners=2, listener_opts=[
        [], tls_lines(pki) + ["protocol websockets"]])
    tls = {"ca_certs": pki["ca_crt"]}
    wss = clients.paho(b, version=version, port=b.ports[1], tls=tls, transport="websockets")
    wss.subscribe("wss/#", 1)
    tcp = clients.paho(b, version=version)
    tcp.subscribe("wss/#", 1)
    tcp.publish("wss/a", b"from-tcp", qos=1)
    wss.publish("wss/b", os.urandom(70000), qos=1)
    for c in (wss, tcp):
        got = sorted(m.topic for m in c.expect_messages(2, timeout=10))
        assert got == ["wss/a", "wss/b"]


def test_bad_tls_files_fail_the_config_check(broker_factory, pki, tmp_path):
    import subprocess
    from conftest import BIN
    b = broker_factory(listener_opts=[["certfile " + pki["server_crt"],
                                       "keyfile " + pki["server_ec_key"]]], start=False)
    r = subprocess.run([BIN, "-c", b.config, "-t"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "key does not match" in r.stderr or "does not match" in r.stderr, r.stderr
