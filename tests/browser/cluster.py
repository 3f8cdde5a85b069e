"""Three real `moneta serve` processes on loopback, started the way README's operator
section does it (a private-network secret, the shared secrets made once by a scratch node),
for the browser suite. Every wait is bounded; `stop()` kills every process it started."""

import ctypes
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

PASSWORD = "correct horse battery staple"


def die_with_parent():
    """In the child before exec: killed when the suite dies, however it dies (Linux)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


_next_port = [None]


def free_port():
    """A loopback port nothing listens on, outside the kernel's ephemeral range: a port found
    by binding port 0 may be taken by any outgoing connection before the node binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first, last = (int(w) for w in f.read().split()[:2])
    except (OSError, ValueError):
        first, last = 32768, 60999
    low, high = (10000, first) if first >= 12000 else (last + 1, 65536)
    if high - low < 2000:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    if _next_port[0] is None:
        _next_port[0] = (os.getpid() * 7919 ^ time.time_ns()) % (high - low)
    for _ in range(high - low):
        port = low + _next_port[0] % (high - low)
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port")


def http(method, url, body=None, token=None, headers=None, timeout=30):
    """(status, headers, parsed JSON or text) of one request."""
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status, hdrs = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, e.headers
    text = raw.decode("utf-8", "replace")
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


class Cluster:
    def __init__(self, binary, root, size=3):
        self.binary = binary
        self.root = root
        self.size = size
        self.procs = []
        self.secret = os.path.join(root, "cluster.secret")
        self.keys = os.path.join(root, "cluster-keys")
        self.nodes = []
        for i in range(size):
            api, peer = free_port(), free_port()
            self.nodes.append({"id": f"n{i + 1}", "api": api, "peer": peer,
                               "base": f"http://127.0.0.1:{api}", "dir": os.path.join(root, f"n{i + 1}")})

    def env(self, node):
        e = dict(os.environ)
        for k in [k for k in e if k.startswith("MONETA_")]:
            del e[k]
        d = node["dir"]
        e.update({
            "MONETA_NODE_ID": node["id"],
            "MONETA_NODE_DATA_DIR": os.path.join(d, "data"),
            "MONETA_GDPR_ERASURE_LIST": os.path.join(d, "erasures.list"),
            "MONETA_BACKUP_KEY_FILE": os.path.join(d, "backup.key"),
            "MONETA_GATEWAY_LISTEN": f"127.0.0.1:{node['api']}",
            "MONETA_LOG_LEVEL": "warn",
            "MONETA_SECURITY_SECRETS_DIR": self.keys,
        })
        return e

    def run(self, args, node, stdin=None, timeout=60):
        r = subprocess.run([self.binary, *args], env=self.env(node), input=stdin, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"moneta {' '.join(args)} failed: {r.stderr}")
        return r.stdout

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        self.run(["cluster", "new-secret", "--out", self.secret], self.nodes[0])
        # The cluster's shared secrets, made once by a scratch node (README, "a cluster").
        scratch = {"id": "scratch", "api": free_port(), "peer": 0, "base": "", "dir": os.path.join(self.root, "scratch")}
        p = subprocess.Popen([self.binary, "serve"], env=self.env(scratch), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        self.procs.append(p)
        self.wait(f"http://127.0.0.1:{scratch['api']}/healthz", 60, p)
        p.terminate()
        p.wait(timeout=30)
        for n in self.nodes:
            os.makedirs(n["dir"], exist_ok=True)
            env = self.env(n)
            env.update({
                "MONETA_CLUSTER_LISTEN": f"127.0.0.1:{n['peer']}",
                "MONETA_CLUSTER_JOIN": ",".join(f"127.0.0.1:{m['peer']}" for m in self.nodes if m is not n),
                "MONETA_CLUSTER_BOOTSTRAP_EXPECT": str(self.size),
                "MONETA_CLUSTER_SECRET_FILE": self.secret,
                "MONETA_CLUSTER_GROUPS": "8",
                "MONETA_MARKET_TICK_INTERVAL": "250ms",
                "MONETA_GATEWAY_REQUEST_TIMEOUT": "8s",
            })
            log = open(os.path.join(n["dir"], "node.log"), "wb")
            proc = subprocess.Popen([self.binary, "serve"], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    preexec_fn=die_with_parent)
            n["proc"] = proc
            self.procs.append(proc)
        for n in self.nodes:
            self.wait(f"{n['base']}/readyz", 120, n["proc"], n)

    def wait(self, url, seconds, proc, node=None):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: the node exited with {proc.returncode}\n{self.log(node)}")
            try:
                status, _, _ = http("GET", url, timeout=5)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} not ready within {seconds} s\n{self.log(node)}")

    def log(self, node):
        if not node:
            return ""
        try:
            with open(os.path.join(node["dir"], "node.log"), "rb") as f:
                return f.read()[-6000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def staff_add(self, email, role):
        self.run(["staff", "add", "--email", email, "--role", role], self.nodes[0], stdin=PASSWORD + "\n")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
