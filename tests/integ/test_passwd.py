"""shoal-passwd: its flags (mosquitto_passwd's), and files that Debian's mosquitto 2.0.11
accepts.

Interop runs both ways at the file level: files written by shoal-passwd are used by the real
/usr/sbin/mosquitto broker (right password: CONNACK 0, wrong or unknown user: 5), and files
written by mosquitto_passwd are edited by shoal-passwd without touching their other lines.
Hashes are also checked independently with Python's hashlib, so each test shows which
password a line holds.
"""

import base64
import hashlib
import os
import pty
import re
import select
import signal
import stat
import subprocess
import time

import pytest

import conftest
import helpers

PASSWD = os.path.join(os.path.dirname(os.environ.get("SHOAL_BIN") or conftest.BIN),
                      "shoal-passwd")
MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
LINE7 = re.compile(r"^([^:]+):\$7\$(\d+)\$([A-Za-z0-9+/]{16})\$([A-Za-z0-9+/]{86}==)$")
LINE6 = re.compile(r"^([^:]+):\$6\$([A-Za-z0-9+/]{16})\$([A-Za-z0-9+/]{86}==)$")


def run(*args, input=None, check=True):
    """Runs shoal-passwd; returns the CompletedProcess (text mode)."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    r = subprocess.run([PASSWD] + list(args), input=input, capture_output=True, text=True,
                       timeout=60, env=env)
    for mark in conftest.SANITIZER_MARKS:
        assert mark not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, "shoal-passwd %s: %d %s" % (args, r.returncode, r.stderr)
        assert r.stderr == "" or input is not None, r.stderr
    return r


def read(path):
    with open(path) as f:
        return f.read()


def lines_of(path):
    return read(path).splitlines()


def line_for(path, user):
    found = [l for l in lines_of(path) if l.split(":", 1)[0] == user]
    assert len(found) == 1, "%s in %r" % (user, lines_of(path))
    return found[0]


def holds(line, password):
    """True when the $6$/$7$ line is the hash of password (computed here, not by shoal)."""
    pw = password.encode()
    m = LINE7.match(line)
    if m:
        salt, want = base64.b64decode(m.group(3)), base64.b64decode(m.group(4))
        return hashlib.pbkdf2_hmac("sha512", pw, salt, int(m.group(2))) == want
    m = LINE6.match(line)
    assert m, "not a $6$ or $7$ line with a 12-byte salt: %r" % line
    salt, want = base64.b64decode(m.group(2)), base64.b64decode(m.group(3))
    return hashlib.sha512(pw + salt).digest() == want


def no_temp_files(directory):
    left = [n for n in os.listdir(directory) if n.startswith(".")]
    assert left == [], left


class Mosquitto:
    """Debian's broker on a free loopback port with only password authentication."""

    def __init__(self, tmp_path, pwfile):
        self.host = "127.0.0.1"
        self.port = conftest.free_port()
        self.conf = str(tmp_path / "mosquitto.conf")
        self.log = str(tmp_path / "mosquitto.log")
        with open(self.conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\n"
                    % (self.port, pwfile))
            if os.geteuid() == 0:
                # As root it would switch to the mosquitto user, who cannot read a 0600 file
                # of ours; "user root" keeps it as it is.
                f.write("user root\n")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not conftest.port_open(self.host, self.port):
            assert self.proc.poll() is None, "mosquitto exited: %s" % read(self.log)
            assert time.monotonic() < deadline, "mosquitto did not listen: %s" % read(self.log)
            time.sleep(0.05)

    def connack(self, user, password):
        c = helpers.Client(self, helpers.unique("pw"), username=user, password=password)
        try:
            c.connect(expect_rc=None)
            return c.connack_rc
        finally:
            c.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def mosquitto(tmp_path):
    started = []

    def start(pwfile):
        m = Mosquitto(tmp_path, pwfile)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


# ---- interop with the real mosquitto -------------------------------------------------------

@pytest.mark.parametrize("flags", [[], ["-H", "sha512-pbkdf2"], ["-H", "sha512"],
                                   ["-H", "sha512-pbkdf2", "-I", "1000"]],
                         ids=["default", "sha512-pbkdf2", "sha512", "pbkdf2-1000"])
def test_mosquitto_accepts_shoal_passwd_files(tmp_path, mosquitto, flags):
    pw = str(tmp_path / "pw")
    run(*flags, "-c", "-b", pw, "alice", "wonder land")
    run(*flags, "-b", pw, "bob", "b:u:i:l:d")
    for user, password in (("alice", "wonder land"), ("bob", "b:u:i:l:d")):
        line = line_for(pw, user)
        assert line.startswith(user + (":$6$" if "sha512" in flags else ":$7$")), line
        if "-I" in flags:
            assert ":$7$1000$" in line
        elif "sha512" not in flags:
            assert ":$7$101$" in line  # mosquitto_passwd 2.0's iteration count
        assert holds(line, password)
    m = mosquitto(pw)
    assert m.connack("alice", "wonder land") == 0
    assert m.connack("bob", "b:u:i:l:d") == 0
    assert m.connack("alice", "wonder") == 5
    assert m.connack("alice", "b:u:i:l:d") == 5
    assert m.connack("carol", "wonder land") == 5


def test_shoal_passwd_edits_mosquitto_passwd_files(tmp_path, mosquitto):
    pw = str(tmp_path / "pw")
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", pw, "alice", "from-mosquitto"], check=True)
    subprocess.run([MOSQUITTO_PASSWD, "-H", "sha512", "-b", pw, "old", "six"], check=True)
    before = lines_of(pw)
    # No warning on stderr: shoal's loader reads what mosquitto_passwd wrote.
    run("-b", pw, "bob", "from-shoal")
    after = lines_of(pw)
    assert after[:2] == before
    assert holds(after[2], "from-shoal")
    m = mosquitto(pw)
    assert m.connack("alice", "from-mosquitto") == 0
    assert m.connack("old", "six") == 0
    assert m.connack("bob", "from-shoal") == 0
    assert m.connack("bob", "from-mosquitto") == 5


def test_upgraded_plain_file_works_in_mosquitto(tmp_path, mosquitto):
    pw = tmp_path / "pw"
    pw.write_text("# plain text for now\n\nu1:p1\nu2:pa:ss word\r\n")
    run("-U", str(pw))
    text = read(pw)
    # No line keeps a plain password (a hash may contain "p1" by chance, so compare fields).
    assert "u1:p1\n" not in text and "pa:ss word" not in text
    assert all(ln.split(":", 1)[1].startswith("$") for ln in text.splitlines()
               if ln and not ln.startswith("#"))
    assert lines_of(pw)[:2] == ["# plain text for now", ""]
    assert holds(line_for(pw, "u1"), "p1")
    assert holds(line_for(pw, "u2"), "pa:ss word")
    m = mosquitto(str(pw))
    assert m.connack("u1", "p1") == 0
    assert m.connack("u2", "pa:ss word") == 0
    assert m.connack("u2", "pa") == 5


# ---- flags ---------------------------------------------------------------------------------

def test_create_makes_a_private_file(tmp_path):
    pw = str(tmp_path / "pw")
    old = os.umask(0o022)
    try:
        run("-c", "-b", pw, "alice", "one")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(pw).st_mode) == 0o600
    assert len(lines_of(pw)) == 1 and holds(lines_of(pw)[0], "one")
    assert read(pw).endswith("\n")
    # -c on an existing file starts it over (keeping its mode).
    os.chmod(pw, 0o640)
    run("-b", pw, "bob", "two")
    run("-c", "-b", pw, "carol", "three")
    assert [l.split(":")[0] for l in lines_of(pw)] == ["carol"]
    assert stat.S_IMODE(os.stat(pw).st_mode) == 0o640
    no_temp_files(tmp_path)


def test_update_replaces_only_that_line(tmp_path):
    pw = tmp_path / "pw"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(pw), "alice", "a1"], check=True)
    subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), "bob", "b1"], check=True)
    with open(pw, "a") as f:
        f.write("# trailing comment\n\n")
    with open(pw) as f:
        text = f.read()
    pw.write_text("# head\n" + text)
    before = lines_of(pw)
    run("-b", str(pw), "alice", "a2")
    after = lines_of(pw)
    assert len(after) == len(before)
    assert after[0] == "# head" and after[2:] == before[2:]
    assert after[1] != before[1] and holds(after[1], "a2")
    assert not holds(after[1], "a1")
    no_temp_files(tmp_path)


def test_hash_kinds_and_iterations(tmp_path):
    pw = str(tmp_path / "pw")
    run("-c", "-H", "argon2id", "-b", pw, "a", "x")
    assert re.match(r"^a:\$argon2id\$v=19\$m=47104,t=1,p=1\$[A-Za-z0-9+/]{86}\$"
                    r"[A-Za-z0-9+/]{86}$", line_for(pw, "a"))
    run("-H", "argon2id", "-I", "3", "-b", pw, "b", "x")
    assert line_for(pw, "b").startswith("b:$argon2id$v=19$m=47104,t=3,p=1$")
    run("-I", "5000", "-b", pw, "c", "pw-c")
    assert line_for(pw, "c").startswith("c:$7$5000$") and holds(line_for(pw, "c"), "pw-c")
    run("-H", "sha512", "-b", pw, "d", "pw-d")
    assert holds(line_for(pw, "d"), "pw-d")
    # -U keeps every hashed line, whatever its kind, and a second run changes nothing.
    before = read(pw)
    run("-U", pw)
    assert read(pw) == before


def test_delete(tmp_path):
    pw = str(tmp_path / "pw")
    run("-c", "-b", pw, "alice", "a")
    run("-b", pw, "bob", "b")
    run("-D", pw, "alice")
    assert [l.split(":")[0] for l in lines_of(pw)] == ["bob"]
    before = read(pw)
    r = run("-D", pw, "alice", check=False)
    assert r.returncode == 1 and "user 'alice' not found" in r.stderr
    assert read(pw) == before
    for args in (["-c", "-D", pw, "bob"], ["-b", "-D", pw, "bob", "x"]):
        r = run(*args, check=False)
        assert r.returncode == 1 and "cannot be used together" in r.stderr, r.stderr
    assert read(pw) == before


def test_prompts_through_a_pipe(tmp_path):
    pw = str(tmp_path / "pw")
    r = run("-c", pw, "alice", input="piped pw\npiped pw\n")
    assert "Password: " in r.stderr and "Reenter password: " in r.stderr
    assert "piped" not in r.stderr + r.stdout
    assert holds(line_for(pw, "alice"), "piped pw")
    # CRLF input, and the last line without a newline.
    run(pw, "bob", input="crlf\r\ncrlf")
    assert holds(line_for(pw, "bob"), "crlf")


def test_prompt_mismatch_and_empty_input_refused(tmp_path):
    pw = str(tmp_path / "pw")
    r = run("-c", pw, "alice", input="one\ntwo\n", check=False)
    assert r.returncode == 1 and "passwords do not match" in r.stderr
    assert not os.path.exists(pw)
    run("-c", "-b", pw, "keep", "k")
    before = read(pw)
    for text in ("", "\n\n", "only-once\n"):
        r = run(pw, "alice", input=text, check=False)
        assert r.returncode == 1, text
    assert read(pw) == before


def test_prompt_on_a_terminal_does_not_echo(tmp_path):
    pw = str(tmp_path / "pw")
    master, slave = pty.openpty()
    p = subprocess.Popen([PASSWD, "-c", pw, "tty"], stdin=slave, stdout=slave, stderr=slave,
                         close_fds=True)
    os.close(slave)
    seen = b""

    def wait_for(text):
        """Reads the terminal until text shows (None: until the program closes it)."""
        nonlocal seen
        deadline = time.monotonic() + 10
        while text is None or text not in seen:
            assert time.monotonic() < deadline, "no %r in %r" % (text, seen)
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 1024)
                except OSError:  # EIO: every holder of the terminal has closed it
                    chunk = b""
                if not chunk:
                    assert text is None, "no %r in %r" % (text, seen)
                    return
                seen += chunk

    try:
        wait_for(b"Password: ")
        os.write(master, b"hidden-secret\n")
        wait_for(b"Reenter password: ")
        os.write(master, b"hidden-secret\n")
        assert p.wait(20) == 0
        wait_for(None)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    assert b"hidden-secret" not in seen, seen
    assert holds(line_for(pw, "tty"), "hidden-secret")


def test_symlinked_file_is_updated_through_the_link(tmp_path):
    real_dir = tmp_path / "..2024_01_01"
    real_dir.mkdir()
    target = real_dir / "pw"
    run("-c", "-b", str(target), "alice", "a")
    os.chmod(target, 0o640)
    os.symlink("..2024_01_01", tmp_path / "..data")
    link = tmp_path / "pw"
    os.symlink("..data/pw", link)
    run("-b", str(link), "bob", "b")
    run("-D", str(link), "alice")
    assert os.path.islink(link) and os.readlink(link) == "..data/pw"
    assert [l.split(":")[0] for l in lines_of(target)] == ["bob"]
    assert holds(line_for(target, "bob"), "b")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    # -c through a link also writes the target.
    run("-c", "-b", str(link), "carol", "c")
    assert os.path.islink(link)
    assert [l.split(":")[0] for l in lines_of(target)] == ["carol"]
    no_temp_files(real_dir)


def test_mode_is_kept_and_read_only_files_are_refused(tmp_path):
    pw = str(tmp_path / "pw")
    run("-c", "-b", pw, "alice", "a")
    for mode in (0o600, 0o640, 0o644, 0o660):
        os.chmod(pw, mode)
        run("-b", pw, "alice", "a%o" % mode)
        assert stat.S_IMODE(os.stat(pw).st_mode) == mode
    os.chmod(pw, 0o444)
    before = read(pw)
    for args in (["-b", pw, "bob", "b"], ["-c", "-b", pw, "bob", "b"], ["-D", pw, "alice"],
                 ["-U", pw]):
        r = run(*args, check=False)
        assert r.returncode == 1 and "read-only" in r.stderr, r.stderr
        assert read(pw) == before
        assert stat.S_IMODE(os.stat(pw).st_mode) == 0o444
    no_temp_files(tmp_path)


def test_upgrade_refuses_bad_lines(tmp_path):
    pw = tmp_path / "pw"
    for text, why in (("u1:SECRETPW\nno-colon\n", "pw:2: expected 'user:password'"),
                      ("u1:\n", "pw:1: empty password"),
                      (":SECRETPW\n", "pw:1: expected 'user:password'")):
        pw.write_text(text)
        r = run("-U", str(pw), check=False)
        assert r.returncode == 1 and why in r.stderr, r.stderr
        assert "SECRETPW" not in r.stderr
        assert read(pw) == text


@pytest.mark.parametrize("args,why", [
    (["-b", "{pw}", "a:b", "x"], "must not contain ':'"),
    (["-b", "{pw}", "", "x"], "must not be empty"),
    (["-b", "{pw}", " lead", "x"], "must not start or end with a space"),
    (["-b", "{pw}", "#hash", "x"], "start with '#'"),
    (["-b", "{pw}", "tab\tname", "x"], "control characters"),
    (["-b", "{pw}", "a", ""], "password must not be empty"),
    (["-H", "md5", "-b", "{pw}", "a", "x"], "unknown hash 'md5'"),
    (["-I", "0", "-b", "{pw}", "a", "x"], "-I must be a number from 1 to 10000000"),
    (["-I", "12x", "-b", "{pw}", "a", "x"], "-I must be a number"),
    (["-H", "argon2id", "-I", "1001", "-b", "{pw}", "a", "x"], "from 1 to 1000"),
    (["-H", "sha512", "-I", "5", "-b", "{pw}", "a", "x"], "-I does not apply"),
    (["-b", "{missing}", "a", "x"], "No such file or directory"),
    (["{missing}", "a", "extra"], "Usage:"),
    (["-b", "{pw}", "a"], "Usage:"),
    (["-U", "{pw}", "a"], "-U takes the password file only"),
    (["-U", "-D", "{pw}"], "-U cannot be used"),
    ([], "Usage:"),
])
def test_bad_arguments(tmp_path, args, why):
    pw = str(tmp_path / "pw")
    run("-c", "-b", pw, "keep", "k")
    before = read(pw)
    missing = str(tmp_path / "missing")
    r = run(*[a.format(pw=pw, missing=missing) for a in args], check=False)
    assert r.returncode == 1, r
    assert why in r.stderr, r.stderr
    assert read(pw) == before
    assert not os.path.exists(missing)


def test_help():
    r = run("-h")
    assert "Usage: shoal-passwd" in r.stdout
