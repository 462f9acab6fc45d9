"""The servers under test: ours (`idp serve`, SQLite or PostgreSQL) and the peer (node)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import procstat
from bench.common import HOST, IDP, PEER_DIR, VAR, BenchUser, ClientInfo
from bench.seed import create_pg_database, idp_env, migrate, seed_client, seed_users

DEFAULT_PATHS = {
    "ours": {
        "discovery": "/.well-known/openid-configuration",
        "jwks": "/jwks.json",
        "token": "/token",
        "introspection": "/introspect",
        "authorization": "/authorize",
    },
    "peer": {
        "discovery": "/.well-known/openid-configuration",
        "jwks": "/jwks",
        "token": "/token",
        "introspection": "/token/introspection",
        "authorization": "/auth",
    },
}


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) != 0


@dataclass
class Target:
    """One provider under test. `kind` is `ours` or `peer`; `label` names it in results."""

    label: str
    kind: str
    port: int
    client: ClientInfo | None = None
    database_url: str | None = None
    notes: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    log_path: Path | None = None
    workers: int = 1
    reprepare: Callable[[], None] | None = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base

    def path(self, what: str) -> str:
        """Path of an endpoint, from discovery when it says, else the usual one."""
        key = {
            "jwks": "jwks_uri",
            "token": "token_endpoint",
            "introspection": "introspection_endpoint",
            "authorization": "authorization_endpoint",
        }.get(what)
        url = self.meta.get(key) if key else None
        if isinstance(url, str) and url.startswith(self.base):
            return url[len(self.base) :] or "/"
        return DEFAULT_PATHS[self.kind][what]

    def url(self, what: str) -> str:
        return self.base + self.path(what)

    # ------------------------------------------------------------------ lifecycle
    def command(self, workers: int) -> tuple[list[str], dict[str, str], Path]:
        if self.kind == "ours":
            assert self.database_url
            cmd = [
                IDP,
                "serve",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ]
            return cmd, idp_env(self.database_url, self.issuer), Path.cwd()
        env = dict(os.environ)
        env.update(
            PEER_HOST=HOST,
            PEER_PORT=str(self.port),
            PEER_WORKERS=str(workers),
            PEER_CONFIG=str(VAR / f"{self.label}.json"),
            PEER_REDIS_URL="redis://127.0.0.1:6379/13",
        )
        return ["node", str(PEER_DIR / "server.js")], env, PEER_DIR

    def start(self, workers: int, cpus: str | None, timeout: float = 60.0) -> float:
        """Start the server; returns the seconds from spawn to the first good discovery GET."""
        if not port_free(self.port):
            raise RuntimeError(f"port {self.port} is taken; is an old benchmark server running?")
        if self.kind == "peer" and workers > 1:
            flush_redis(13)
        cmd, env, cwd = self.command(workers)
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        VAR.mkdir(parents=True, exist_ok=True)
        self.log_path = VAR / f"{self.label}-w{workers}.log"
        log = self.log_path.open("ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.workers = workers
        probe = self.base + DEFAULT_PATHS[self.kind]["discovery"]
        with httpx.Client(timeout=2.0) as http:
            while time.perf_counter() - started < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.label} exited with {self.proc.returncode}; see {self.log_path}"
                    )
                try:
                    r = http.get(probe)
                except httpx.TransportError:
                    time.sleep(0.01)
                    continue
                ready = time.perf_counter() - started
                if r.status_code == 200:
                    self.meta = r.json()
                else:
                    self.meta = {}
                    self.notes.append(f"discovery answered {r.status_code}")
                if workers > 1:
                    self._wait_workers(workers, http)
                return ready
        self.stop()
        raise RuntimeError(f"{self.label} not ready within {timeout:.0f} s; see {self.log_path}")

    def _wait_workers(self, workers: int, http: httpx.Client) -> None:
        """With several workers the first answer comes from one; wait for all to be up."""
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            if self.sample().workers >= workers:
                break
            time.sleep(0.05)
        for _ in range(20):
            http.get(self.base + DEFAULT_PATHS[self.kind]["discovery"])

    @property
    def pg_dbname(self) -> str | None:
        if self.database_url and self.database_url.startswith("postgresql"):
            return self.database_url.rsplit("/", 1)[-1]
        return None

    def database_exists(self) -> bool:
        """False when this target's PostgreSQL database is gone (the machine is shared:
        someone may drop it); always True for the others."""
        name = self.pg_dbname
        if not name:
            return True
        import psycopg

        from bench.common import PG_ADMIN_URL

        with psycopg.connect(PG_ADMIN_URL) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None

    def analyze(self) -> None:
        """Refresh the planner statistics of this target's PostgreSQL database (nothing for
        the others). In production autovacuum does it as tables grow; this machine's
        PostgreSQL runs with autovacuum off, and without statistics PostgreSQL takes freshly
        filled tables for empty and may plan a refresh's UPDATE ... FROM as a scan of every
        account (1.5 ms a refresh with 600 accounts)."""
        name = self.pg_dbname
        if not name:
            return
        import psycopg

        from bench.common import PG_ADMIN_URL

        with psycopg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, autocommit=True) as c:
            c.execute("ANALYZE")

    def db_cpu(self) -> dict[int, float]:
        """CPU seconds of the PostgreSQL backends of this target (empty for others)."""
        name = self.pg_dbname
        return procstat.postgres_backends_cpu(name) if name else {}

    def sample(self) -> procstat.TreeSample:
        assert self.proc is not None
        return procstat.sample(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None


def flush_redis(db: int) -> None:
    """Empty the peer's Redis database (cluster mode only), speaking RESP directly."""
    try:
        with socket.create_connection((HOST, 6379), timeout=2) as s:
            s.sendall(
                f"*2\r\n$6\r\nSELECT\r\n${len(str(db))}\r\n{db}\r\n*1\r\n$7\r\nFLUSHDB\r\n".encode()
            )
            s.recv(100)
    except OSError as exc:
        raise RuntimeError(
            f"Redis on 127.0.0.1:6379 is needed for the peer's cluster mode: {exc}"
        ) from exc


# ---------------------------------------------------------------------- preparation
def prepare_ours_sqlite(label: str, port: int, users: list[BenchUser], pw_hash: str) -> Target:
    db = VAR / f"{label}.sqlite3"
    for old in VAR.glob(f"{label}.sqlite3*"):  # with -wal, -shm and the throttle's sidecar
        old.unlink()
    return _prepare_ours(label, port, f"sqlite:///{db}", users, pw_hash)


def prepare_ours_pg(
    label: str, port: int, users: list[BenchUser], pw_hash: str, *, dbname: str = "idp_bench"
) -> Target:
    target = _prepare_ours(label, port, create_pg_database(dbname), users, pw_hash)

    def again() -> None:
        fresh = _prepare_ours(label, port, create_pg_database(dbname), users, pw_hash)
        target.client, target.database_url = fresh.client, fresh.database_url
        target.notes.append(f"database {dbname} vanished during the run and was made again")

    target.reprepare = again
    return target


def _prepare_ours(label: str, port: int, url: str, users: list[BenchUser], pw_hash: str) -> Target:
    VAR.mkdir(parents=True, exist_ok=True)
    migrate(url)
    client, how = seed_client(url)
    seed_users(url, users, pw_hash)
    target = Target(label=label, kind="ours", port=port, client=client, database_url=url)
    if how != "idp clients create":
        target.notes.append(f"client registered by {how}")
    return target


def prepare_peer(label: str, port: int, users: list[BenchUser], pw_hash: str) -> Target:
    import secrets

    client = ClientInfo("bench-peer-client", secrets.token_urlsafe(32))
    VAR.mkdir(parents=True, exist_ok=True)
    config = {
        "client": {
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "redirect_uri": client.redirect_uri,
        },
        "password_hash": pw_hash,
        "users": [{"id": u.id, "email": u.email, "totp_secret": u.totp_secret} for u in users],
    }
    (VAR / f"{label}.json").write_text(json.dumps(config))
    if not (PEER_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True)
    return Target(label=label, kind="peer", port=port, client=client)


def ours_version() -> str:
    out = subprocess.run([IDP, "--help"], capture_output=True, text=True, check=False)
    return "idp" if out.returncode == 0 else "idp (CLI not importable)"
