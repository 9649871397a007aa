"""Private Redis and PostgreSQL servers that speak only TLS and want a password, with a
throwaway CA made by ``openssl`` for each test, for the TLS tests.

Redis listens on a TLS port only (``--port 0``); PostgreSQL's pg_hba.conf has ``hostssl``
lines only, so a client without TLS is refused. Both certificates name 127.0.0.1, so
clients verify them fully (``sslmode=verify-full``, ``ssl_cert_reqs=required``)::

    certs = make_certs(tmp_path)
    redis = TlsRedis(certs, "secret").start()      # redis.url: rediss://...
    pg = TlsPostgres(certs, "secret").start()      # pg.url: ...?sslmode=verify-full
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from docbatch.processes import free_port
from tests.fixtures import ARTIFACTS, _processes


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def make_certs(folder: Path) -> Certs:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian package openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=docbatch test CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr",
        cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "server.crt", "-extfile", "server.ext",
        cwd=folder,
    )  # fmt: skip
    return Certs(folder / "ca.pem", folder / "server.crt", folder / "server.key")


class TlsRedis:
    """redis-server on a TLS port only, with a password."""

    def __init__(self, certs: Certs, password: str) -> None:
        self.certs = certs
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bare_url(self) -> str:
        """``rediss://`` with the password and no TLS options."""
        return f"rediss://:{self.password}@127.0.0.1:{self.port}/0"

    def url(self) -> str:
        """``rediss://`` with the password, verifying the server against the test CA."""
        return f"{self.bare_url}?ssl_cert_reqs=required&ssl_ca_certs={self.certs.ca}"

    def start(self) -> TlsRedis:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip("redis-server is not installed")
        ARTIFACTS.mkdir(exist_ok=True)
        log = (ARTIFACTS / f"redis-tls-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", "0",
                "--tls-port", str(self.port),
                "--bind", "127.0.0.1",
                "--tls-cert-file", str(self.certs.cert),
                "--tls-key-file", str(self.certs.key),
                "--tls-ca-cert-file", str(self.certs.ca),
                "--tls-auth-clients", "no",
                "--requirepass", self.password,
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _processes.append(self.proc)
        deadline = time.monotonic() + 30
        while self.cli("PING") != "PONG":
            if self.proc.poll() is not None:
                text = (ARTIFACTS / f"redis-tls-{self.port}.log").read_text()[-2000:]
                lowered = text.lower()
                if "tls" in lowered and any(w in lowered for w in ("directive", "support")):
                    pytest.skip(f"this redis-server is built without TLS: {text}")
                raise RuntimeError(f"redis-server with TLS did not start:\n{text}")
            assert time.monotonic() < deadline, "redis-server with TLS did not start"
            time.sleep(0.1)
        return self

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [
                "redis-cli", "--tls", "--cacert", str(self.certs.ca), "-p", str(self.port),
                "-a", self.password, "--no-auth-warning", *args,
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
        return out.stdout.strip()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pg_bin(name: str) -> str:
    installed = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    found = shutil.which(name) or (installed[-1] if installed else None)
    if found is None:
        pytest.skip(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
    return found


class TlsPostgres:
    """A private PostgreSQL cluster in a temporary folder: TLS only, password (SCRAM) only.

    initdb and the server refuse to run as root, so as root they run as the ``postgres``
    system user (which owns the folder)."""

    USER = "docbatch"

    def __init__(self, certs: Certs, password: str) -> None:
        self.certs = certs
        self.password = password
        # Its own folder under /tmp: the postgres user cannot walk into pytest's (0700).
        self.folder = Path(tempfile.mkdtemp(prefix="docbatch-pg-tls-"))
        self.port = free_port()
        self.data = self.folder / "data"

    def url(self, sslmode: str = "verify-full", database: str = "docbatch") -> str:
        query = f"sslmode={sslmode}"
        if sslmode.startswith("verify"):
            query += f"&sslrootcert={self.certs.ca}"
        return (
            f"postgresql+psycopg://{self.USER}:{self.password}@127.0.0.1:{self.port}/"
            f"{database}?{query}"
        )

    def _as_owner(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True)

    def start(self) -> TlsPostgres:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        for name in ("cert", "key"):
            shutil.copy(getattr(self.certs, name), self.folder / f"server.{name}")
        (self.folder / "pw").write_text(self.password)
        os.chmod(self.folder / "server.key", 0o600)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            for path in self.folder.iterdir():
                shutil.chown(path, "postgres")
        out = self._as_owner(
            initdb, "-D", str(self.data), "-U", self.USER, "--pwfile", str(self.folder / "pw"),
            "--auth=scram-sha-256", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.folder}'\n"
                f"ssl = on\nssl_cert_file = '{self.folder / 'server.cert'}'\n"
                f"ssl_key_file = '{self.folder / 'server.key'}'\n"
                "fsync = off\nmax_connections = 100\n"
            )
        # TLS or nothing: no `host` (plain) line, so a client without TLS is refused.
        (self.data / "pg_hba.conf").write_text(
            "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
        )
        out = self._as_owner(
            pg_ctl, "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "start"
        )
        assert out.returncode == 0, out.stderr + (self.folder / "server.log").read_text()[-2000:]
        from sqlalchemy import create_engine, text

        admin = create_engine(self.url(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE docbatch"))
        admin.dispose()
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_owner(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
