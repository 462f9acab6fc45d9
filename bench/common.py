"""Things every part of the benchmark shares: paths, the test client, the user pool."""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VAR = BENCH / "var"
RESULTS = BENCH / "results"
LUA = BENCH / "lua"
PEER_DIR = BENCH / "peer"
VENV_BIN = Path(sys.executable).parent
IDP = str(VENV_BIN / "idp")

HOST = "127.0.0.1"  # load tests only ever target loopback
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never followed: the code is read from Location
SCOPE = "openid email profile offline_access"
PASSWORD = "bench horse battery staple 42"
NS = uuid.UUID("6f1d3c2a-7b84-4c36-9a57-0d5e8a3b2c11")


@dataclass(frozen=True)
class ClientInfo:
    client_id: str
    client_secret: str
    redirect_uri: str = REDIRECT_URI


@dataclass(frozen=True)
class BenchUser:
    """A test user: same password for all, each with its own TOTP secret."""

    id: str
    email: str
    totp_secret: str


def bench_user(i: int) -> BenchUser:
    digest = hashlib.sha256(f"bench-totp-{i}".encode()).digest()[:20]  # 160-bit seed
    return BenchUser(
        id=str(uuid.uuid5(NS, f"bench-user-{i}")),
        email=f"bench{i:07d}@bench.example",
        totp_secret=base64.b32encode(digest).decode().rstrip("="),
    )


def user_pool(n: int) -> list[BenchUser]:
    return [bench_user(i) for i in range(n)]


def password_hash() -> str:
    """One argon2id hash of PASSWORD with our service's parameters, reused by every account
    of both providers (m=19456, t=2, p=1)."""
    try:
        from idp.accounts.passwords import hash_password

        return hash_password(PASSWORD)
    except ImportError:  # the service's module is not there yet: same parameters
        from argon2 import PasswordHasher, Type

        return PasswordHasher(
            time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
        ).hash(PASSWORD)


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if not path:
        raise SystemExit(f"{name} is missing: {hint}")
    return path
