"""A throw-away PKI for TLS tests, made with the `openssl` command line (stdlib only).

make_pki(dirpath) fills dirpath with a CA, a rogue CA, server certificates (RSA and ECDSA)
for localhost and client certificates in every state the broker must tell apart, plus CRLs.
Client certificates go through `openssl ca`, so its database can revoke any of them later:
revoke(pki, name) writes a new CRL for reload tests. Nothing is written outside dirpath.

Run `python3 pki.py` to build one in a temporary directory, print the paths and check it
with `openssl verify`.
"""

import datetime
import os
import shutil
import subprocess
import sys
import tempfile

CA_SUBJECT = "/O=Shoal Test/CN=Shoal Test CA"
ROGUE_SUBJECT = "/O=Rogue/CN=Rogue CA"

# name -> (subject, valid): every client certificate make_pki issues. "later" starts valid
# and exists to be revoked by revoke() in reload tests.
CLIENTS = {
    "good": ("/O=Shoal Test/CN=good-client", True),
    "later": ("/O=Shoal Test/CN=later-client", True),
    "expired": ("/O=Shoal Test/CN=expired-client", False),
    "revoked": ("/O=Shoal Test/CN=revoked-client", True),
}

_CA_CONF = """\
[ca]
default_ca = shoal_ca

[shoal_ca]
dir = {db}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
certificate = {ca_crt}
private_key = {ca_key}
default_md = sha256
default_days = 30
default_crl_days = 30
policy = policy_any
unique_subject = no
copy_extensions = none
crl_extensions = crl_ext

[policy_any]
organizationName = optional
commonName = supplied

[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[crl_ext]
authorityKeyIdentifier = keyid
"""


def _run(*args, cwd=None):
    """Runs openssl with args; raises with its stderr when it fails."""
    p = subprocess.run(("openssl",) + args, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), p.stderr.strip()))
    return p.stdout


def _ec_key(path):
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


def _rsa_key(path):
    _run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)


def _self_signed_ca(key, crt, subject):
    _run("req", "-x509", "-new", "-key", key, "-subj", subject, "-days", "30", "-sha256",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", crt)


def _utc(days):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)
    return t.strftime("%Y%m%d%H%M%SZ")


def _ca_sign(pki, csr, crt, ext, start=None, end=None):
    args = ["ca", "-batch", "-config", pki["ca_conf"], "-notext", "-in", csr, "-out", crt,
            "-extensions", ext]
    if start:
        args += ["-startdate", start, "-enddate", end]
    _run(*args)


def _issue(pki, name, subject, ext, key_maker=_ec_key, start=None, end=None):
    d = pki["dir"]
    key = os.path.join(d, name + ".key")
    crt = os.path.join(d, name + ".crt")
    csr = os.path.join(pki["ca_db"], name + ".csr")
    key_maker(key)
    _run("req", "-new", "-key", key, "-subj", subject, "-out", csr)
    _ca_sign(pki, csr, crt, ext, start, end)
    pki[name.replace("-", "_") + "_crt"] = crt
    pki[name.replace("-", "_") + "_key"] = key


def _gencrl(pki, path):
    _run("ca", "-batch", "-config", pki["ca_conf"], "-gencrl", "-out", path)
    return path


def make_pki(dirpath):
    """Creates the PKI in dirpath (which must exist) and returns a dict of absolute paths:

    dir, ca_crt, ca_key, rogue_ca_crt, rogue_ca_key,
    server_crt/server_key (RSA 2048, CN=localhost, SAN DNS:localhost, IP:127.0.0.1),
    server_ec_crt/server_ec_key (P-256, same names),
    good_crt/key (CN=good-client), later_crt/key (CN=later-client, valid, for revoke()),
    expired_crt/key (validity entirely in the past), revoked_crt/key (CN=revoked-client,
    listed in crl), rogue_crt/key (CN=rogue-client, issued by the rogue CA),
    crl (revokes revoked), crl_empty (revokes nothing), ca_conf and ca_db (the CA database).
    """
    d = os.path.abspath(dirpath)
    db = os.path.join(d, "ca-db")
    os.makedirs(os.path.join(db, "newcerts"))
    pki = {
        "dir": d,
        "ca_db": db,
        "ca_conf": os.path.join(db, "ca.cnf"),
        "ca_crt": os.path.join(d, "ca.crt"),
        "ca_key": os.path.join(d, "ca.key"),
        "rogue_ca_crt": os.path.join(d, "rogue-ca.crt"),
        "rogue_ca_key": os.path.join(d, "rogue-ca.key"),
    }
    with open(os.path.join(db, "index.txt"), "w"):
        pass
    with open(os.path.join(db, "serial"), "w") as f:
        f.write("1000\n")
    with open(os.path.join(db, "crlnumber"), "w") as f:
        f.write("1000\n")
    with open(pki["ca_conf"], "w") as f:
        f.write(_CA_CONF.format(db=db, ca_crt=pki["ca_crt"], ca_key=pki["ca_key"]))

    _ec_key(pki["ca_key"])
    _self_signed_ca(pki["ca_key"], pki["ca_crt"], CA_SUBJECT)
    _ec_key(pki["rogue_ca_key"])
    _self_signed_ca(pki["rogue_ca_key"], pki["rogue_ca_crt"], ROGUE_SUBJECT)

    _issue(pki, "server", "/CN=localhost", "server_ext", key_maker=_rsa_key)
    _issue(pki, "server-ec", "/CN=localhost", "server_ext")
    for name, (subject, valid) in CLIENTS.items():
        if valid:
            _issue(pki, name, subject, "client_ext")
        else:
            _issue(pki, name, subject, "client_ext", start=_utc(-60), end=_utc(-30))

    # The rogue CA signs directly: it needs no database.
    pki["rogue_key"] = os.path.join(d, "rogue.key")
    pki["rogue_crt"] = os.path.join(d, "rogue.crt")
    csr = os.path.join(db, "rogue.csr")
    _ec_key(pki["rogue_key"])
    _run("req", "-new", "-key", pki["rogue_key"], "-subj", "/O=Rogue/CN=rogue-client",
         "-out", csr)
    _run("x509", "-req", "-in", csr, "-CA", pki["rogue_ca_crt"], "-CAkey",
         pki["rogue_ca_key"], "-set_serial", "4242", "-days", "30", "-sha256",
         "-out", pki["rogue_crt"])

    pki["crl_empty"] = _gencrl(pki, os.path.join(d, "crl-empty.pem"))
    _run("ca", "-batch", "-config", pki["ca_conf"], "-revoke", pki["revoked_crt"])
    pki["crl"] = _gencrl(pki, os.path.join(d, "crl.pem"))
    return pki


def revoke(pki, name):
    """Revokes client certificate `name` (e.g. "good", "later") as well, and returns the path
    of a new CRL listing every certificate revoked so far (crl-1.pem, crl-2.pem, ...)."""
    crt = pki.get(name.replace("-", "_") + "_crt")
    if not crt or name.startswith("rogue"):
        raise ValueError("no certificate %r issued by the test CA" % name)
    _run("ca", "-batch", "-config", pki["ca_conf"], "-revoke", crt)
    n = 1
    while os.path.exists(os.path.join(pki["dir"], "crl-%d.pem" % n)):
        n += 1
    return _gencrl(pki, os.path.join(pki["dir"], "crl-%d.pem" % n))


def make_capath(dirpath, certs=None, crls=None):
    """Makes dirpath/capath, a hashed directory (`openssl rehash`) holding certs (default:
    dirpath/ca.crt) and crls (default: none), for `capath`. Returns its path."""
    d = os.path.join(os.path.abspath(dirpath), "capath")
    os.makedirs(d, exist_ok=True)
    for src in list(certs or [os.path.join(dirpath, "ca.crt")]) + list(crls or []):
        shutil.copy(src, os.path.join(d, os.path.basename(src)))
    _run("rehash", d)
    return d


def verify(pki, crt, crl=None):
    """`openssl verify` of crt against the CA (and crl when given): (ok, output)."""
    args = ["openssl", "verify", "-CAfile", pki["ca_crt"]]
    if crl:
        args += ["-crl_check", "-CRLfile", crl]
    p = subprocess.run(args + [crt], capture_output=True, text=True)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def selfcheck(pki):
    """Raises AssertionError unless every certificate verifies (or fails) as intended."""
    expect = [
        ("good_crt", pki["crl"], True, ""),
        ("later_crt", pki["crl"], True, ""),
        ("server_crt", None, True, ""),
        ("server_ec_crt", None, True, ""),
        ("revoked_crt", pki["crl"], False, "certificate revoked"),
        ("revoked_crt", pki["crl_empty"], True, ""),
        ("expired_crt", None, False, "certificate has expired"),
        ("rogue_crt", None, False, "unable to get local issuer certificate"),
    ]
    for key, crl, want_ok, want_text in expect:
        ok, out = verify(pki, pki[key], crl)
        assert ok == want_ok and want_text in out, "%s: %s" % (key, out)


if __name__ == "__main__":
    where = tempfile.mkdtemp(prefix="shoal-pki-")
    made = make_pki(where)
    for k in sorted(made):
        print("%-14s %s" % (k, made[k]))
    selfcheck(made)
    capath = make_capath(where)
    print("%-14s %s" % ("capath", capath))
    crl2 = revoke(made, "later")
    ok, out = verify(made, made["later_crt"], crl2)
    assert not ok and "certificate revoked" in out, out
    print("%-14s %s" % ("revoke(later)", crl2))
    print("self-check passed", file=sys.stderr)
