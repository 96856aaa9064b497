"""Real servers for the tests, started on loopback with temporary state (see DEVELOPERS.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used, from /proc/PID/stat: a peer's cost measured from outside."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _wait_http(url: str, ok: tuple[int, ...], timeout: float = 20.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status in ok:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/bin/{binary}" if os.access(f"/usr/bin/{binary}", os.X_OK) else None)
    if not path:
        if os.environ.get("CI"):
            raise RuntimeError(f"{binary} missing: tests/install-deps should have installed {package}")
        pytest.skip(f"{binary} not installed (apt-get install -y {package}; `make test` does it)")
    return path


class Influxd:
    """InfluxDB 1.x (Debian's influxdb 1.6.7) on 127.0.0.1 with a temporary config and data dir."""

    def __init__(self, root: Path, auth: bool = False) -> None:
        self.exe = need("influxd", "influxdb")
        self.root = root
        self.port = free_port()
        self.rpc = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.conf = root / "influxdb.conf"
        self.conf.write_text(f"""
reporting-enabled = false
bind-address = "127.0.0.1:{self.rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  index-version = "inmem"
  wal-fsync-delay = "0s"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
  max-body-size = 0
[logging]
  level = "warn"
[continuous_queries]
  enabled = false
""")

    def start(self) -> Influxd:
        self.proc = subprocess.Popen([self.exe, "run", "-config", str(self.conf), "-pidfile", str(self.root / "pid")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "log", "ab"))
        _wait_http(self.url + "/ping", (204,), proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def query(self, q: str, db: str | None = None, auth: tuple[str, str] | None = None) -> list[dict]:
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        req = urllib.request.Request(self.url + "/query", data=urllib.parse.urlencode(params).encode())
        if auth:
            import base64
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        with urllib.request.urlopen(req, timeout=30) as r:
            doc = json.loads(r.read())
        res = doc["results"][0]
        if "error" in res:
            raise RuntimeError(res["error"])
        return res.get("series", [])

    def create_db(self, name: str, auth=None) -> None:
        self.query(f'CREATE DATABASE "{name}"', auth=auth)

    def points(self, db: str, measurement: str) -> list[dict]:
        """Every point of a measurement as dicts (time in ns plus tags and fields)."""
        out = []
        for series in self.query(f'SELECT * FROM "{measurement}"', db):
            cols = series["columns"]
            for row in series["values"]:
                out.append(dict(zip(cols, row)))
        return out


class VictoriaMetrics:
    """Debian's victoria-metrics: a real server that accepts /api/v2/write."""

    def __init__(self, root: Path) -> None:
        self.exe = need("victoria-metrics", "victoria-metrics")
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> VictoriaMetrics:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.exe, f"-storageDataPath={self.root}/data", f"-httpListenAddr=127.0.0.1:{self.port}",
             "-retentionPeriod=100y", "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=ERROR"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "log", "ab"))
        _wait_http(self.url + "/health", (200,), proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def export(self, match: str) -> list[dict]:
        urllib.request.urlopen(self.url + "/internal/force_flush", timeout=10).read()
        q = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=30) as r:
            return [json.loads(line) for line in r.read().decode().splitlines() if line]


class Prometheus:
    """Debian's prometheus (2.42) on 127.0.0.1 with a temporary config and TSDB: scraping the targets handed in,
    and (remote_write_receiver) accepting remote write at /api/v1/write."""

    def __init__(self, root: Path, scrape: list[str] = (), interval: str = "1s",
                 remote_write_receiver: bool = False, rule_files: list[Path] = ()) -> None:
        self.exe = need("prometheus", "prometheus")
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scrape = list(scrape)
        self.interval = interval
        self.receiver = remote_write_receiver
        self.rule_files = [str(f) for f in rule_files]
        self.proc = None

    def start(self) -> Prometheus:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = {"global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
               "scrape_configs": [{"job_name": "aifactory", "static_configs": [{"targets": self.scrape}]}]
               if self.scrape else [], "rule_files": self.rule_files}
        (self.root / "prometheus.yml").write_text(json.dumps(cfg))
        args = [self.exe, f"--config.file={self.root / 'prometheus.yml'}", f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        if self.receiver:
            args.append("--web.enable-remote-write-receiver")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.root / "log", "ab"))
        _wait_http(self.url + "/-/ready", (200,), proc=self.proc, timeout=30)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def _api(self, endpoint: str, args: dict, timeout: float) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(args)}",
                                    timeout=timeout) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def query_range(self, q: str, start: float, end: float, step: float = 60.0) -> list[dict]:
        return self._api("query_range", {"query": q, "start": str(start), "end": str(end), "step": str(step)}, 60)

    def query(self, q: str, at: float | None = None) -> list[dict]:
        """An instant query's result vector: [{"metric": {...}, "value": [ts, "v"]}]."""
        return self._api("query", {"query": q, **({"time": str(at)} if at is not None else {})}, 30)


def snmpsim_venv(root: Path) -> Path:
    """As root, snmpsim runs as nobody, who must reach its interpreter: not inside a checkout that may sit
    in a 0700 folder (see tests/install-deps)."""
    return Path("/var/tmp/aifactory-test/venv-snmpsim") if os.geteuid() == 0 else root / ".venv-snmpsim"


class Snmpsim:
    """snmpsim serving .snmprec recordings on 127.0.0.1 (community = file name without .snmprec).

    Runs from the snmpsim venv (built from Debian's python3 by tests/install-deps), because as root
    snmpsim drops privileges to nobody, who must be able to read the interpreter and the data.
    """

    V3_USER, V3_AUTH, V3_PRIV = "aifactory", "auth-secret-123", "priv-secret-456"

    def __init__(self, recordings: Path, extra: dict[str, str] | None = None) -> None:
        """extra: more recordings generated by the tests, {community: snmprec text}."""
        import tempfile

        root = Path(__file__).resolve().parent.parent
        self.exe = snmpsim_venv(root) / "bin" / "snmpsim-command-responder"
        if not self.exe.exists():
            if os.environ.get("CI"):
                raise RuntimeError(f"snmpsim missing: tests/install-deps should have built {self.exe.parent.parent}")
            pytest.skip(f"snmpsim not installed (tests/install-deps test builds {self.exe.parent.parent})")
        self.dir = Path(tempfile.mkdtemp(prefix="aif-snmpsim-"))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        shutil.copytree(recordings, self.data)
        for name, text in (extra or {}).items():
            (self.data / f"{name}.snmprec").write_text(text)
        self.cache = self.dir / "cache"
        self.cache.mkdir()
        os.chmod(self.cache, 0o777)
        for p in self.data.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(self.data, 0o755)
        self.port = free_port_udp()
        self.proc = None

    def start(self) -> Snmpsim:
        args = [str(self.exe), f"--data-dir={self.data}", f"--cache-dir={self.cache}",
                f"--agent-udpv4-endpoint=127.0.0.1:{self.port}",
                # one SNMPv3 user, authPriv SHA/AES-128; the context name selects the recording
                f"--v3-user={self.V3_USER}", f"--v3-auth-key={self.V3_AUTH}", "--v3-auth-proto=SHA",
                f"--v3-priv-key={self.V3_PRIV}", "--v3-priv-proto=AES"]
        if os.geteuid() == 0:
            args += ["--process-user=nobody", "--process-group=nogroup"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "ab"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"snmpsim exited: {(self.dir / 'log').read_text()[-2000:]}")
            if self._answers():
                return self
            time.sleep(0.2)
        raise RuntimeError("snmpsim did not answer")

    def _answers(self) -> bool:
        import asyncio

        from collectors.snmp.client import Credentials, DeviceError, SnmpClient

        async def go():
            c = SnmpClient()
            try:
                name = next(self.data.glob("*.snmprec")).stem
                return bool(await c.get(Credentials(community=name), "127.0.0.1", self.port,
                                        ["1.3.6.1.2.1.1.2.0"], 0.5, 0))
            except DeviceError:
                return False
            finally:
                c.close()

        return asyncio.run(go())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def free_udp_ports(n: int) -> list[int]:
    """n free UDP ports on loopback, all different: every socket stays bound until all are picked."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_udp() -> int:
    return free_udp_ports(1)[0]


def serve_http(handler, tls: tuple[Path, Path, Path] | None = None) -> tuple:
    """A threaded HTTP server on a free loopback port, serving in a daemon thread: (server, base URL); HTTPS with
    tls_pair()'s certificate and key."""
    import ssl
    import threading
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls:
        httpd.daemon_threads = True
        httpd.handle_error = lambda *a: None  # a client refusing the certificate (or giving up) is the test
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls[1]), str(tls[2]))
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"


def tls_pair(root: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, issuer, key, signer, ca: bool):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aifactory test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, True)
    srv = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmc")]), ca_name, key, ca_key, False)
    root.mkdir(parents=True, exist_ok=True)
    paths = root / "ca.pem", root / "cert.pem", root / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class SushyStatic:
    """sushy-tools' `sushy-static` (OpenStack's Redfish emulator) serving a mockup folder over HTTPS."""

    def __init__(self, mockup: Path, tls: tuple[Path, Path, Path]) -> None:
        import sys

        self.exe = Path(sys.executable).with_name("sushy-static")
        if not self.exe.exists():
            exe = shutil.which("sushy-static")
            if not exe:
                if os.environ.get("CI"):
                    raise RuntimeError("sushy-static missing: pip install .[dev] installs sushy-tools")
                pytest.skip("sushy-static not installed (pip install sushy-tools; `make test` does it)")
            self.exe = Path(exe)
        self.mockup, self.ca, self.cert, self.key = mockup, *tls
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> SushyStatic:
        import ssl

        self.proc = subprocess.Popen(
            [str(self.exe), "--interface", "127.0.0.1", "--port", str(self.port), "--mockup-files", str(self.mockup),
             "--ssl-certificate", str(self.cert), "--ssl-key", str(self.key)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # it prints every request's headers
        ctx = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sushy-static exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/redfish/v1", timeout=1, context=ctx) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sushy-static did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def serve_bmc(mockup: Path, tls: tuple[Path, Path, Path], user: str = "monitor", password: str = "s3cret",
              delay: float = 0.0):
    """sushy-static's own request handler, behind what sushy-static lacks and BMCs do: basic auth, Redfish
    sessions (POST SessionService/Sessions -> X-Auth-Token, DELETE to log out) and a configurable delay.
    Returns (server, url, state); state counts logins, logouts and requests, and `expire()` drops sessions."""
    import base64
    import secrets

    from sushy_tools.static import main as sushy

    sushy.REDFISH_MOCKUP_FILES = str(mockup)  # one mockup per process: the handler reads a module global

    class State:
        def __init__(self) -> None:
            self.tokens: set[str] = set()
            self.logins = self.logouts = self.gets = 0
            self.delay = delay
            self.refuse_logins = 0  # the next N logins answer 503 with Retry-After (a BMC rebooting)
            self.retry_after = "1"
            self.forbid: set[str] = set()  # paths answered 403 (an account without the right to read them)
            self.drip: set[str] = set()  # paths whose answer comes a byte every 0.2 s
            self.dripped = 0  # bytes of those answers written before the client went away
            self.bodies: dict[str, bytes] = {}  # paths answered with these bytes (huge, nested, ...)
            self.unavailable = False  # every request answers 503 with Retry-After (a BMC rebooting)

        def expire(self) -> None:
            self.tokens.clear()

    state = State()
    good = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(sushy.RequestHandler):
        def _log_request(self, method):
            n = int(self.headers.get("content-length", 0) or 0)
            self.body = self.rfile.read(n) if n else b""

        def log_message(self, *a):
            pass

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == good or self.headers.get("X-Auth-Token") in state.tokens

        def _deny(self):
            body = b'{"error": {"code": "Base.1.0.InsufficientPrivilege"}}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send(self, status: int, body: bytes, headers: dict | None = None, drip: bool = False):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not drip:
                self.wfile.write(body)
                return
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                state.dripped += 1
                time.sleep(0.2)

        def do_GET(self):
            if state.delay:
                time.sleep(state.delay)
            state.gets += 1
            if state.unavailable:
                return self._send(503, b"{}", {"Retry-After": state.retry_after})
            path = self.path.rstrip("/")
            if path != "/redfish/v1" and not self._authorized():
                return self._deny()
            if path in state.forbid:
                return self._send(403, b'{"error": {"code": "Base.1.0.InsufficientPrivilege"}}')
            if path in state.bodies:
                return self._send(200, state.bodies[path])
            if path in state.drip:
                return self._send(200, json.dumps({"Id": "drip", "Name": "x" * 200}).encode(), drip=True)
            super().do_GET()

        def do_POST(self):
            self._log_request("POST")
            if self.path.rstrip("/") == "/redfish/v1/SessionService/Sessions":
                if state.unavailable:
                    return self._send(503, b"{}", {"Retry-After": state.retry_after})
                if state.refuse_logins:
                    state.refuse_logins -= 1
                    return self._send(503, b"{}", {"Retry-After": state.retry_after})
                try:
                    creds = json.loads(self.body)
                except ValueError:
                    creds = {}
                if creds.get("UserName") == user and creds.get("Password") == password:
                    token = secrets.token_hex(16)
                    state.tokens.add(token)
                    state.logins += 1
                    self.send_response(201)
                    self.send_header("X-Auth-Token", token)
                    self.send_header("Location", f"/redfish/v1/SessionService/Sessions/{token[:8]}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                return self._deny()
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_DELETE(self):
            if self._authorized():
                state.tokens.discard(self.headers.get("X-Auth-Token"))
                state.logouts += 1
                self.send_response(204)
            else:
                self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd, url = serve_http(Handler, tls)  # its errors unsaid: a client giving up on a slow answer is the point
    return httpd, url, state


class Slurm:
    """A one-node Slurm 22.05 cluster (Debian's slurmctld, slurmd, munge) on loopback, everything under `root`:
    its own munge key and socket, ports, spool and state dirs; two GPUs as GRES on existing character devices
    (no GPU here: /dev/null and /dev/zero stand for /dev/nvidia0 and 1; ../shared/reference/real-services.md).
    proctrack/linuxproc: no per-job cgroups, as in this container; processes map to jobs by `scontrol listpids`."""

    def __init__(self, root: Path, epilog: Path | None = None, task_epilog: Path | None = None) -> None:
        import os
        import socket as _socket

        for exe, pkg in (("munged", "munge"), ("slurmctld", "slurmctld"), ("slurmd", "slurmd"),
                         ("scontrol", "slurm-client"), ("sbatch", "slurm-client")):
            need(exe, pkg)
        self.root = root
        self.node = _socket.gethostname().split(".")[0]
        (root / "munge").mkdir(parents=True, mode=0o700)
        for d in ("spool", "state", "log"):
            (root / d).mkdir()
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = root / "munge" / "munge.socket"
        ctl, node_port = free_port(), free_port()
        cpus = os.cpu_count() or 1
        self.conf = root / "slurm.conf"
        self.conf.write_text(f"""ClusterName=aftest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctl}
SlurmdPort={node_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
GresTypes=gpu
{f"Epilog={epilog}" if epilog else ""}
{f"TaskEpilog={task_epilog}" if task_epilog else ""}
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        (root / "gres.conf").write_text(f"AutoDetect=off\nNodeName={self.node} Name=gpu File=/dev/null\n"
                                        f"NodeName={self.node} Name=gpu File=/dev/zero\n")
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []

    def start(self) -> Slurm:
        import time

        r = self.root
        subprocess.run(["munged", "--force", f"--key-file={r / 'munge' / 'munge.key'}",
                        f"--socket={self.munge_socket}", f"--pid-file={r / 'munge' / 'munged.pid'}",
                        f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munge' / 'seed'}"],
                       check=True, capture_output=True, timeout=30)
        for exe in ("slurmctld", "slurmd"):
            subprocess.run([exe, "-f", str(self.conf)], check=True, capture_output=True, env=self.env, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = self.scontrol("show", "node", self.node, check=False)
            if "State=IDLE" in out:
                return self
            time.sleep(0.5)
        raise RuntimeError(f"slurmd did not come up: {out}\n" + (r / "log" / "slurmctld.log").read_text()[-2000:])

    def scontrol(self, *args: str, check: bool = True) -> str:
        p = subprocess.run(["scontrol", *args], capture_output=True, text=True, env=self.env, timeout=30)
        if check and p.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)}: {p.stderr}")
        return p.stdout + (p.stderr if not check else "")

    def sbatch(self, *args: str) -> str:
        # the job's output and working directory under the cluster's folder, never the checkout
        p = subprocess.run(["sbatch", "--parsable", f"--chdir={self.root}", f"--output={self.root}/slurm-%j.out",
                            *args], capture_output=True, text=True, env=self.env, timeout=30, check=True)
        return p.stdout.strip().split(";")[0]

    def stop(self) -> None:
        import os
        import signal

        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            try:
                os.kill(int((self.root / pidfile).read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError):
                pass


# --- Modbus TCP ---------------------------------------------------------------------------------------------------


def modbus_words(kind: str, value: float, word_order: str = "big") -> list[int]:
    """The 16-bit registers a device holds for `value` of a profile's register type (the inverse of the engine's
    decoding): how the tests build register images from a profile's published map."""
    import struct

    from collectors.common.profile import WORD_TYPES

    count, fmt = WORD_TYPES[kind]
    raw = struct.pack(">" + fmt, value if fmt in "fd" else int(value))
    words = list(struct.unpack(f">{count}H", raw))
    return words if word_order == "big" else words[::-1]


class ModbusServer:
    """A real Modbus TCP server (pymodbus 3.16's ModbusTcpServer on its SimDevice datastore) on a free loopback
    port, in a thread with its own event loop. `units` maps a unit id to its register image, {"hr": {address:
    word}, "ir": {...}, "co": {address: bool}, "di": {...}}: addresses not in the image answer exception 2
    (illegal data address), as a device does for registers it does not have; a unit not served answers exception
    4, pymodbus' answer for an unknown id. `busy` units answer exception 6 (server device busy) to every read.
    Images can be changed between polls (set_register), and `dynamic` registers are computed when asked:
    {(unit, table, address): f(now) -> words}, a counter that grows with wall time as a real meter's does."""

    PLACEHOLDER = 65535  # pymodbus wants each of the four tables non-empty: one register nobody reads

    def __init__(self, units: dict[int, dict[str, dict[int, int]]], busy: set[int] = frozenset(),
                 dynamic: dict | None = None) -> None:
        self.units = units
        self.busy = set(busy)
        self.dynamic = dynamic or {}
        for (unit, table, address), f in self.dynamic.items():  # present from the start, so the map has them
            self.set_register(unit, table, address, f(time.time()))
        self.port = free_port()
        self.requests = 0
        self._loop = None
        self._server = None
        self._thread = None

    def _device(self, unit: int, image: dict[str, dict[int, int]]):
        from pymodbus.constants import ExcCodes
        from pymodbus.simulator import DataType, SimData, SimDevice

        def blocks(table: str, bits: bool) -> list:
            cells = image.get(table) or {self.PLACEHOLDER: False if bits else 0}
            out, run, start = [], [], None
            for addr in sorted(cells):
                if run and addr == start + len(run):
                    run.append(cells[addr])
                    continue
                if run:
                    out.append((start, run))
                run, start = [cells[addr]], addr
            out.append((start, run))
            kind = DataType.BITS if bits else DataType.REGISTERS
            return [SimData(a, values=[bool(v) for v in vs] if bits else list(vs), datatype=kind) for a, vs in out]

        async def action(function_code, start_address, address, count, current_registers, set_values):
            self.requests += 1
            if unit in self.busy:
                return ExcCodes.DEVICE_BUSY
            # live images: a test changes a register between polls
            table = {1: "co", 2: "di", 3: "hr", 4: "ir"}.get(function_code, "hr")
            now = time.time()
            for (u, t, a), f in self.dynamic.items():
                if u == unit and t == table:
                    self.set_register(u, t, a, f(now))
            live = self.units[unit].get(table, {})
            if function_code in (3, 4):
                for i in range(len(current_registers)):
                    a = start_address + i
                    if a in live:
                        current_registers[i] = live[a]
            return None

        return SimDevice(id=unit, simdata=(blocks("co", True), blocks("di", True), blocks("hr", False),
                                           blocks("ir", False)), action=action)

    def start(self) -> ModbusServer:
        import asyncio
        import logging
        import threading

        from pymodbus.server import ModbusTcpServer

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # an unknown unit id logs a traceback
        devices = [self._device(u, img) for u, img in self.units.items()]
        ready = threading.Event()

        async def serve():
            self._server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))
            ready.set()
            await self._server.serve_forever()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            except Exception:  # stopped
                pass

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"Modbus server on {self.port} did not listen")

    def set_register(self, unit: int, table: str, address: int, words: list[int]) -> None:
        for i, w in enumerate(words):
            self.units[unit].setdefault(table, {})[address + i] = w

    def stop(self) -> None:
        import asyncio

        if self._loop is not None and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        if self._thread is not None:
            self._thread.join(10)


class SilentServer:
    """A TCP listener that accepts and never answers: a device whose Modbus stack hung (or a gateway whose serial
    side is dead without saying so)."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def stop(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


# --- dashboards -----------------------------------------------------------------------------------------------


def board_variables(q: str, selected: dict[str, str] | None = None) -> str:
    """The boards' own variables as Grafana fills them: the constants' defaults, and each selection its selected
    value, or "All" (.*)."""
    q = q.replace("$price_per_kwh", "0.12").replace("$grid_g_per_kwh", "350")
    selected = selected or {}
    return re.sub(r"\$(site|cluster|rack|host|gpu)\b", lambda m: re.escape(selected.get(m.group(1), "")) or ".*", q)


def substitute(q: str, selected: dict[str, str] | None = None, at: float | None = None) -> str:
    """The InfluxQL as Grafana sends it: its time filter and interval, and the board's variables."""
    q = q.replace("$timeFilter", "time > now() - 2h").replace("$__interval", "1m")
    if at is not None:  # a fixed "now", so that two runs of a query compare equal to the nanosecond
        q = q.replace("now()", "'" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) + "'")
    return board_variables(q, selected)
