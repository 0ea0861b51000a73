"""Fixtures: real `atrest server` processes on throw-away data directories.

The SDK packages are used unmodified; the only configuration is the environment from
`DIR/env`, exactly as a user would `source` it.
"""
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from azure.identity import ClientSecretCredential

ROOT = Path(__file__).resolve().parents[2]
ATREST = Path(os.environ.get("ATREST_BIN", ROOT / "target" / "debug" / "atrest"))
# `az://CONTAINER` on Azurite when scripts/test runs the disk suite on the object-store
# backend; the servers then keep disk blocks there (the data directory is their cache).
BLOB_STORE = os.environ.get("ATREST_TEST_BLOB_STORE")
# A PostgreSQL server (`postgres://…/postgres`) when scripts/test runs the suite on the shared
# backend: each data directory then keeps its state in a database of its own there.
STATE_SERVER = os.environ.get("ATREST_TEST_STATE_SERVER")
# With STATE_SERVER, the main server becomes this many replicas of one database behind a
# TCP load balancer (Proxy), as a platform team would run them.
REPLICAS = int(os.environ.get("ATREST_TEST_REPLICAS", "1"))
AZURITE_ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
HOSTS = [l.strip() for l in (Path(__file__).parent / "hosts").read_text().splitlines() if l.strip() and not l.startswith("#")]


def parse_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0]
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix):
    """A fresh resource name."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def import_body():
    """A certificate import's REST body: a self-signed EC certificate and its PKCS#8 key,
    as PEM in `value`, made with `cryptography`."""
    import datetime as dt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "matrix-import")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)
    return {"value": pem.decode()}


def qemu_io(uri, *commands):
    """Runs qemu-io commands on a raw image or NBD URI; fails the test on any failure."""
    args = ["qemu-io", "-f", "raw"]
    for c in commands:
        args += ["-c", c]
    done = subprocess.run(args + [uri], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "failed" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done.stdout


class Proxy:
    """A TCP load balancer: each connection goes to the next backend port in turn."""

    def __init__(self, backends):
        self.backends = backends
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            backend = self.backends[self.connections % len(self.backends)]
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", backend))
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


class Server:
    """One `atrest server` child process, or (`replicas` > 1) several on one database
    behind a Proxy, used through the proxy; `proc`, `data_dir` and the env are the first's."""

    def __init__(self, data_dir, *args, replicas=1, replica_of=None):
        """`replica_of`: the data directory of a server this one is a replica of (its
        database, a copy of its root.key)."""
        self.data_dir = Path(data_dir)
        self.replica_of = Path(replica_of) if replica_of else None
        self.args = list(args)
        self.log_path = self.data_dir.parent / (self.data_dir.name + ".log")
        self.proc = None
        self.env = {}
        self.replicas = replicas
        self.peers = []
        self.proxy = None
        self.listen_port = 0

    def state_url(self):
        """The database this data directory's state lives in on STATE_SERVER, created on
        first use."""
        owner = self.replica_of or self.data_dir
        name = "atrest_" + hashlib.sha256(str(owner).encode()).hexdigest()[:20]
        exists = subprocess.run(["psql", STATE_SERVER, "-Atc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                                check=True, capture_output=True, text=True).stdout.strip()
        if not exists:
            subprocess.run(["psql", STATE_SERVER, "-qc", f"CREATE DATABASE {name}"], check=True)
        return STATE_SERVER.rsplit("/", 1)[0] + "/" + name

    def start(self):
        if self.replicas > 1 and not self.peers:
            ports = [free_port() for _ in range(self.replicas)]
            self.proxy = Proxy(ports)
            self.args += ["--public-port", str(self.proxy.port)]
            self.listen_port = ports[0]
            self._start_one()
            for i, port in enumerate(ports[1:], start=2):
                peer_dir = self.data_dir.parent / f"{self.data_dir.name}-replica{i}"
                peer = Server(peer_dir, *self.args, replica_of=self.data_dir)
                peer.listen_port = port
                self.peers.append(peer._start_one())
            return self
        return self._start_one()

    def _start_one(self):
        if self.replica_of and not (self.data_dir / "root.key").exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copy(self.replica_of / "root.key", self.data_dir / "root.key")
            os.chmod(self.data_dir / "root.key", 0o600)
        env_file = self.data_dir / "env"
        env_file.unlink(missing_ok=True)  # a stale one from an earlier run is not readiness
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(ATREST), "server", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.listen_port}",
             *(["--blob-store", BLOB_STORE] if BLOB_STORE else []),
             *(["--state", self.state_url()] if STATE_SERVER else []), *self.args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while not env_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"atrest server exited: {self.log_path.read_text()}")
            if time.time() > deadline:
                raise RuntimeError("atrest server did not become ready")
            time.sleep(0.05)
        self.env = parse_env(env_file)
        return self

    def stop(self):
        """SIGTERM, and the exit status of a clean shutdown (the worst of the replicas')."""
        statuses = []
        for peer in self.peers:
            statuses.append(peer.stop())
        self.proc.send_signal(signal.SIGTERM)
        statuses.append(self.proc.wait(timeout=30))
        if self.proxy:
            self.proxy.close()
        return max(statuses, key=abs)

    @property
    def port(self):
        return int(self.env["ATREST_ENDPOINT"].rsplit(":", 1)[1])

    def vault_url(self, name):
        return f"https://{name}.vault.localhost:{self.port}"

    def vault_scope(self, name, rg="default"):
        """The ARM resource id of a vault, as role assignments name it."""
        return f"/subscriptions/{self.env['ATREST_SUBSCRIPTION_ID']}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}"

    def cli(self, *args, check=True):
        """Runs the CLI against this server; returns parsed JSON (or None)."""
        env = {**os.environ, **self.env}
        done = subprocess.run([str(ATREST), *args], env=env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"atrest {' '.join(args)} failed: {done.stderr}")
        if not check:
            return done
        return json.loads(done.stdout) if done.stdout.strip() else None

    def credential(self, app_id=None, password=None):
        """A client-secret credential for this server (its administrator by default)."""
        return ClientSecretCredential("adfs", app_id or self.env["AZURE_CLIENT_ID"],
                                      password or self.env["AZURE_CLIENT_SECRET"],
                                      authority=self.env["AZURE_AUTHORITY_HOST"],
                                      connection_verify=self.env["ATREST_CA"])

    def management_client(self, client_class, credential=None):
        """A Microsoft management client (azure-mgmt-*) on this server's ARM API, as its
        administrator unless `credential` is given."""
        return client_class(credential or self.credential(), self.env["ATREST_SUBSCRIPTION_ID"],
                            base_url=self.env["ATREST_ENDPOINT"], connection_verify=self.env["ATREST_CA"],
                            credential_scopes=["https://management.azure.com/.default"])

    def new_principal(self, prefix):
        """A new service principal (its objectId included) and a credential for it."""
        sp = self.cli("ad", "sp", "create-for-rbac", "--name", f"{prefix}-{uuid.uuid4().hex[:10]}")
        listed = [p for p in self.cli("ad", "sp", "list") if p["appId"] == sp["appId"]]
        return {**sp, "objectId": listed[0]["objectId"]}, self.credential(sp["appId"], sp["password"])

    def log(self):
        return "".join(s.log_path.read_text() for s in [self, *self.peers])

    # The block store, as its backend keeps it: files under DIR/disks, or Azurite's blobs.
    def _container(self):
        from azure.storage.blob import ContainerClient
        return ContainerClient(os.environ["AZURITE_BLOB_STORAGE_URL"].rstrip("/") + "/devstoreaccount1",
                               BLOB_STORE.removeprefix("az://"),
                               credential={"account_name": "devstoreaccount1", "account_key": AZURITE_ACCOUNT_KEY})

    def stored(self, prefix):
        """Every stored block-store object under `prefix` (`chunks/ID/`, `manifests/`),
        name → bytes."""
        if BLOB_STORE:
            from azure.core.exceptions import ResourceNotFoundError
            c = self._container()
            out = {}
            for b in c.list_blobs(name_starts_with=prefix):
                try:
                    out[b.name] = c.download_blob(b.name).readall()
                except ResourceNotFoundError:
                    pass  # deleted (garbage collected) between the listing and the read
            return out
        base = self.data_dir / "disks"
        return {name: f.read_bytes() for f in sorted(base.rglob("*"))
                if f.is_file() and (name := str(f.relative_to(base))).startswith(prefix)}

    def put_stored(self, name, data):
        """Writes one block-store object, as someone with access to the store could."""
        if BLOB_STORE:
            self._container().upload_blob(name, data, overwrite=True)
        else:
            path = self.data_dir / "disks" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def local_block_usage(self):
        """Bytes the disks' blocks take on the local file system (chunks, or their cache)."""
        return sum(f.stat().st_blocks * 512 for f in (self.data_dir / "disks").rglob("*") if f.is_file())


@pytest.fixture(scope="session", autouse=True)
def hosts_resolve():
    for name in HOSTS:
        try:
            addr = socket.gethostbyname(f"{name}.vault.localhost")
        except OSError:
            addr = None
        if addr != "127.0.0.1":
            pytest.exit(f"{name}.vault.localhost does not resolve to 127.0.0.1; run scripts/test (it adds /etc/hosts lines)", 2)


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="atrest-sdk-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def server(workdir):
    """The main server; its env is exported to this process like `source DIR/env`."""
    # The authorization matrices create keys far faster than Azure's 10 per 10 seconds;
    # throttling has its own server and tests.
    srv = Server(workdir / "main", "--purge-interval", "1s",
                 "--throttle-limits", "key-create=100000,secrets=100000,keys=100000",
                 replicas=REPLICAS if STATE_SERVER else 1).start()
    saved = dict(os.environ)
    os.environ.update(srv.env)
    srv.cli("keyvault", "create", "-n", "sdk-main", "-l", "westeurope", "--retention-days", "7")
    srv.cli("keyvault", "create", "-n", "sdk-pp", "-l", "westeurope", "--retention-days", "7", "--enable-purge-protection", "true")
    srv.cli("keyvault", "create", "-n", "sdk-restore", "-l", "northeurope")
    srv.cli("keyvault", "create", "-n", "sdk-geo", "-l", "eastus")
    yield srv
    os.environ.clear()
    os.environ.update(saved)
    if srv.proc.poll() is None:
        # Everything the suite did to this server left an unbroken audit chain.
        assert srv.cli("monitor", "audit", "verify")["verified"] is True
        assert srv.stop() == 0, srv.log()


@pytest.fixture
def cert_clients(server):
    """Certificate, key and secret clients of the main server's `sdk-main`, and their credential."""
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.certificates import CertificateClient
    from azure.keyvault.keys import KeyClient
    from azure.keyvault.secrets import SecretClient
    credential = DefaultAzureCredential()
    url = server.vault_url("sdk-main")
    return (CertificateClient(url, credential), KeyClient(url, credential), SecretClient(url, credential),
            credential)


@pytest.fixture(scope="session")
def short_server(workdir):
    """A second server whose tokens live two seconds."""
    srv = Server(workdir / "short", "--token-lifetime", "2s").start()
    srv.cli("keyvault", "create", "-n", "sdk-short", "-l", "westeurope")
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="session")
def clock_server(workdir):
    """A server whose scheduler clock a test drives, so no other test's keys rotate."""
    srv = Server(workdir / "clock").start()
    srv.cli("keyvault", "create", "-n", "sdk-clock", "-l", "westeurope")
    yield srv
    assert srv.stop() == 0, srv.log()
