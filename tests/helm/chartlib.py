"""Render the Helm chart helm/shoal without helm, and lay out what a pod of it would see.

render(sets, values_files) runs tests/helm/render (a Go program built with text/template and
sprig, as helm is) and returns the manifests as dicts. shoal_conf(docs) is the shoal.conf of
the rendered ConfigMap. materialize(docs, root) writes, under root, every file the broker
container would find at its mount paths (the ConfigMap, the Secrets the chart renders, and
stand-ins for Secrets it only names, such as an existing TLS Secret), runs the chart's init
step with a given pod address, and returns the path of a shoal.conf whose file paths point
into root: `shoal -t -c` on it checks the chart's configuration as a node would load it.

Environment: SHOAL_HELM_RENDER, a prebuilt renderer; else it is built once per process with
the Debian Go toolchain (GOPATH mode, /usr/share/gocode) into SHOAL_BUILD, the directory of
SHOAL_BIN, or a temporary directory. SHOAL_BIN also locates shoal-passwd for stand-in
password files.
"""

import base64
import os
import re
import secrets
import subprocess
import tempfile
import threading
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SRC = Path(os.environ.get("SHOAL_SRC") or HERE.parents[1])
CHART = SRC / "helm" / "shoal"
RENDER_SRC = HERE / "render"

# shoal.conf directives whose (last) argument is a file or folder path.
PATH_DIRECTIVES = ("password_file", "acl_file", "cluster_secret_file", "certfile", "keyfile",
                   "cafile", "capath", "crlfile", "include_dir")

_lock = threading.Lock()
_renderer = None


class RenderError(Exception):
    """The renderer refused the chart or the values; str() is its message."""


def _build_dir():
    if os.environ.get("SHOAL_BUILD"):
        return Path(os.environ["SHOAL_BUILD"])
    if os.environ.get("SHOAL_BIN"):
        return Path(os.environ["SHOAL_BIN"]).resolve().parent
    return Path(tempfile.gettempdir()) / "shoal-helm-render"


def renderer():
    """Path of the renderer binary, built on first use in this process."""
    global _renderer
    with _lock:
        if _renderer:
            return _renderer
        pre = os.environ.get("SHOAL_HELM_RENDER")
        if pre:
            _renderer = Path(pre)
            return _renderer
        out_dir = _build_dir()
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / "helm-render"
        env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
                   GOCACHE=str(out_dir / "go-cache"), GOFLAGS="", GOENV="off")
        tmp = out_dir / f".helm-render.{os.getpid()}"
        r = subprocess.run(["go", "build", "-o", str(tmp), "."], cwd=RENDER_SRC, env=env,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RenderError("building the renderer failed:\n" + r.stdout + r.stderr)
        os.replace(tmp, out)  # atomic: a concurrent process never runs a half-written file
        _renderer = out
        return _renderer


def render_text(sets=None, values_files=None, set_strings=None, release="shoal",
                namespace="default", kube_version=None, strict=True, notes=False,
                extra_args=()):
    """The renderer's output (a YAML stream, or NOTES.txt with notes=True)."""
    cmd = [str(renderer()), str(CHART), "--name", release, "--namespace", namespace]
    if strict:
        cmd.append("--strict")
    if notes:
        cmd.append("--notes")
    if kube_version:
        cmd += ["--kube-version", kube_version]
    for f in values_files or ():
        cmd += ["-f", str(f)]
    for s in _as_list(sets):
        cmd += ["--set", s]
    for s in _as_list(set_strings):
        cmd += ["--set-string", s]
    cmd += list(extra_args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RenderError(r.stderr.strip() or f"renderer exited {r.returncode}")
    return r.stdout


def _as_list(sets):
    if sets is None:
        return []
    if isinstance(sets, dict):
        return [f"{k}={_set_value(v)}" for k, v in sets.items()]
    if isinstance(sets, str):
        return [sets]
    return list(sets)


def _set_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v).replace("\\", "\\\\").replace(",", "\\,")


def split_sources(text):
    """[(source, document text)] of a rendered stream, in order."""
    out = []
    for chunk in re.split(r"(?m)^---[ \t]*\n", text):
        if not chunk.strip():
            continue
        m = re.match(r"# Source: (\S+)\n", chunk)
        out.append((m.group(1) if m else None, chunk))
    return out


def render(sets=None, values_files=None, **kw):
    """The rendered manifests as dicts (empty documents dropped)."""
    docs = []
    for _source, chunk in split_sources(render_text(sets, values_files, **kw)):
        doc = yaml.safe_load(chunk)
        if doc is not None:
            docs.append(doc)
    return docs


def find(docs, kind, name=None):
    """Documents of a kind (and name); hooks included."""
    return [d for d in docs if d.get("kind") == kind
            and (name is None or d["metadata"]["name"] == name)]


def one(docs, kind, name=None):
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def broker_deployment(docs):
    return one(docs, "Deployment")


def shoal_conf(docs):
    """shoal.conf as rendered into the broker's ConfigMap."""
    dep = broker_deployment(docs)
    cm_name = next(v["configMap"]["name"] for v in dep["spec"]["template"]["spec"]["volumes"]
                   if "configMap" in v)
    return one(docs, "ConfigMap", cm_name)["data"]["shoal.conf"]


def conf_lines(conf):
    """[(directive, [args])] of a shoal.conf text, comments and blank lines dropped."""
    out = []
    for line in conf.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        out.append((parts[0], parts[1:]))
    return out


def rewrite_paths(conf, root):
    """conf with the path argument of every PATH_DIRECTIVES line moved under root."""
    out = []
    for line in conf.splitlines():
        parts = line.split()
        if parts and parts[0] in PATH_DIRECTIVES and parts[-1].startswith("/"):
            line = line.replace(parts[-1], str(Path(root)) + parts[-1], 1)
        out.append(line)
    return "\n".join(out) + "\n"


def init_container(docs, name="node-conf"):
    spec = broker_deployment(docs)["spec"]["template"]["spec"]
    return next(c for c in spec["initContainers"] if c["name"] == name)


def secret_data(docs, name):
    """{key: bytes} of a Secret the chart renders, or None when it only names it."""
    found = find(docs, "Secret", name)
    if not found:
        return None
    d = found[0]
    data = {k: base64.b64decode(v) for k, v in (d.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (d.get("stringData") or {}).items()})
    return data


class StandIns:
    """Contents for Secrets the chart names but does not render (existingSecret, the Secret
    cert-manager fills): a throw-away CA and server certificate, a password file made by
    shoal-passwd, an ACL, a cluster secret, a Redis URL."""

    def __init__(self, workdir, redis_url="redis://127.0.0.1:6379"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url
        self._pki = None

    def pki(self):
        if self._pki is None:
            d = self.dir / "pki"
            d.mkdir(parents=True, exist_ok=True)
            ossl = ["openssl"]
            ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            subprocess.run(ossl + ["req", "-x509", *ec, "-keyout", d / "ca.key", "-out",
                                   d / "ca.crt", "-days", "2", "-subj", "/CN=chart test CA"],
                           check=True, capture_output=True)
            subprocess.run(ossl + ["req", *ec, "-keyout", d / "tls.key", "-out", d / "tls.csr",
                                   "-subj", "/CN=shoal"], check=True, capture_output=True)
            subprocess.run(ossl + ["x509", "-req", "-in", d / "tls.csr", "-CA", d / "ca.crt",
                                   "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2",
                                   "-out", d / "tls.crt"], check=True, capture_output=True)
            self._pki = {k: (d / k).read_bytes() for k in ("ca.crt", "tls.crt", "tls.key")}
        return self._pki

    def passwd(self):
        tool = Path(os.environ.get("SHOAL_BIN", SRC / "build" / "shoal")).parent / "shoal-passwd"
        f = self.dir / "passwd.standin"
        subprocess.run([str(tool), "-c", "-b", str(f), "chart", "chart-password"], check=True,
                       capture_output=True)
        return f.read_bytes()

    def value(self, key):
        if key in ("tls.crt", "tls.key", "ca.crt"):
            return self.pki()[key]
        if key in ("passwd", "password_file"):
            return self.passwd()
        if key == "acl":
            return b"topic readwrite #\n"
        if key == "url":
            return self.redis_url.encode()
        return secrets.token_urlsafe(32).encode()

    def secret(self, name, keys):
        return {k: self.value(k) for k in keys}


def _volume_files(docs, volume, standins):
    """{relative path: bytes} a volume shows at its mount path."""
    if "configMap" in volume:
        src = volume["configMap"]
        data = {k: v.encode() for k, v in one(docs, "ConfigMap", src["name"])["data"].items()}
    elif "secret" in volume:
        src = volume["secret"]
        data = secret_data(docs, src["secretName"])
        if data is None:
            keys = [i["key"] for i in src.get("items", [])] or ["tls.crt", "tls.key", "ca.crt"]
            data = standins.secret(src["secretName"], keys)
    else:
        return {}
    items = src.get("items")
    if not items:
        return data
    return {i["path"]: data[i["key"]] for i in items}


def _env(container, docs, standins, pod_ip, root, mount_paths):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root)}
    for e in container.get("env", []):
        if "value" in e:
            v = e["value"]
            env[e["name"]] = str(root) + v if v in mount_paths else v
            continue
        ref = e["valueFrom"]
        if "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "status.podIP", ref
            env[e["name"]] = pod_ip
        elif "secretKeyRef" in ref:
            name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            data = secret_data(docs, name) or standins.secret(name, [key])
            env[e["name"]] = data[key].decode()
        else:
            raise AssertionError(f"unsupported env source {ref}")
    return env


def materialize(docs, root, pod_ip="10.1.2.3", standins=None):
    """Lay out the broker container's files under root and run the init containers.

    Returns the path of shoal.conf with its file paths moved under root (the directives are
    untouched). root/<mountPath> holds each mounted volume's files as the kubelet would
    place them; emptyDir volumes start empty and are shared with the init containers.
    """
    root = Path(root)
    standins = standins or StandIns(root / ".standins")
    pod = broker_deployment(docs)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    shoal = next(c for c in pod["containers"] if c["name"] == "shoal")
    mounts = {}
    for c in pod.get("initContainers", []) + [shoal]:
        for m in c.get("volumeMounts", []):
            prev = mounts.setdefault(m["mountPath"], m["name"])
            assert prev == m["name"], f"{m['mountPath']}: volumes {prev} and {m['name']}"
    for path, vname in mounts.items():
        target = root / path.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for rel, content in _volume_files(docs, volumes[vname], standins).items():
            f = target / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(content)
    for c in pod.get("initContainers", []):
        cmd = c["command"]
        assert cmd[0] == "/bin/sh", cmd
        env = _env(c, docs, standins, pod_ip, root, set(mounts))
        r = subprocess.run(["/bin/sh"] + cmd[1:], env=env, capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"init container {c['name']} failed: {r.stderr}")
    args = shoal["command"] + shoal.get("args", [])
    conf_path = Path(args[args.index("-c") + 1])
    main = root / conf_path.relative_to("/")
    rewritten = main.parent / ("rewritten-" + main.name)
    rewritten.write_text(rewrite_paths(main.read_text(), root))
    # Included files are read as they are; their paths are rewritten too.
    for line in main.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["include_dir"]:
            inc = root / parts[1].lstrip("/")
            for f in inc.glob("*.conf"):
                f.write_text(rewrite_paths(f.read_text(), root))
    return rewritten


def shoal_check(shoal_bin, conf_path):
    """(exit code, output) of `shoal -t -c conf_path`."""
    r = subprocess.run([str(shoal_bin), "-t", "-c", str(conf_path)], capture_output=True,
                       text=True, timeout=30)
    return r.returncode, (r.stdout + r.stderr).strip()

