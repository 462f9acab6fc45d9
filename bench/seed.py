"""Fast seeding of benchmark data into our provider's database.

- `seed_client`: the benchmark's confidential client, through `idp clients create --json`
  (the supported way); if that command is not available yet, a row written directly.
- `seed_users`: the pool of test users who sign in during the benchmark, each with its own
  confirmed TOTP authenticator (seed encrypted at rest as the service does it).
- `seed_filler`: many more accounts (1,000 or 1,000,000) in PostgreSQL with COPY, one
  precomputed argon2id hash reused, unique email addresses, so that sign-in and token
  figures can be compared at both sizes.

As a command:
    .venv/bin/python bench/seed.py \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/idp_bench \\
        --accounts 1000000 [--users 4000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import IDP, NS, REDIRECT_URI, SCOPE, BenchUser, ClientInfo, password_hash


def idp_env(database_url: str, issuer: str = "http://127.0.0.1:8000") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(IDP_DATABASE_URL=database_url, IDP_ISSUER=issuer, IDP_LOG_LEVEL="warning")
    return env


def migrate(database_url: str) -> None:
    out = subprocess.run(
        [IDP, "migrate"], env=idp_env(database_url), capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"idp migrate failed: {out.stderr.strip() or out.stdout.strip()}")


def seed_client(database_url: str, *, name: str = "Benchmark") -> tuple[ClientInfo, str]:
    """Register the benchmark client; returns it and how it was registered."""
    cmd = [
        IDP,
        "clients",
        "create",
        "--name",
        name,
        "--redirect-uri",
        REDIRECT_URI,
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "refresh_token",
        "--grant-type",
        "client_credentials",
        "--json",
    ]
    for extra in (["--scope", SCOPE], []):
        out = subprocess.run(
            cmd + extra, env=idp_env(database_url), capture_output=True, text=True, check=False
        )
        if out.returncode == 0:
            data = json.loads(out.stdout)
            return ClientInfo(data["client_id"], data["client_secret"]), "idp clients create"
    note = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or ["?"]
    return _insert_client(database_url, name), f"direct insert (CLI: {note[0][:120]})"


def _insert_client(database_url: str, name: str) -> ClientInfo:
    from sqlalchemy import insert

    from idp.crypto import new_token, token_digest
    from idp.db import make_engine
    from idp.models import Client

    client_id = "bench-" + uuid.uuid4().hex[:12]
    secret = new_token(32)
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(Client.__table__).values(
                    client_id=client_id,
                    client_secret_hash=token_digest(secret),
                    name=name,
                    redirect_uris=[REDIRECT_URI],
                    post_logout_redirect_uris=[],
                    grant_types=["authorization_code", "refresh_token", "client_credentials"],
                    scope=SCOPE,
                    token_endpoint_auth_method="client_secret_basic",
                    first_party=True,
                )
            )
    finally:
        engine.dispose()
    return ClientInfo(client_id, secret)


def seed_users(database_url: str, users: list[BenchUser], pw_hash: str | None = None) -> None:
    """Accounts that can sign in, each with a confirmed TOTP authenticator."""
    from sqlalchemy import insert

    from idp.accounts.totp import encrypt_secret
    from idp.crypto import Encryptor
    from idp.db import make_engine
    from idp.models import Account, TotpCredential
    from idp.settings import Settings

    pw_hash = pw_hash or password_hash()
    encryptor = Encryptor(Settings(database_url=database_url).encryption_keyring)
    now = dt.datetime.now(dt.UTC)
    accounts = [
        {
            "id": u.id,
            "email": u.email,
            "email_key": u.email.lower(),
            "email_verified": True,
            "name": f"Bench user {u.email.split('@')[0]}",
            "password_hash": pw_hash,
            "created_at": now,
            "updated_at": now,
        }
        for u in users
    ]
    creds = [
        {
            "id": str(uuid.uuid5(NS, f"totp-{u.id}")),
            "account_id": u.id,
            "secret_encrypted": encrypt_secret(encryptor, u.totp_secret, account_id=u.id),
            "last_used_step": 0,
            "created_at": now,
        }
        for u in users
    ]
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            for i in range(0, len(users), 1000):
                conn.execute(insert(Account.__table__), accounts[i : i + 1000])
                conn.execute(insert(TotpCredential.__table__), creds[i : i + 1000])
    finally:
        engine.dispose()


def _filler_rows(start: int, count: int, pw_hash: str, stamp: str) -> Iterable[bytes]:
    """COPY text rows: id, email, email_key, email_verified, name, password_hash, times."""
    buf = io.StringIO()
    for i in range(start, start + count):
        email = f"filler{i:08d}@scale.example"
        ident = uuid.uuid5(NS, f"filler-{i}")
        buf.write(f"{ident}\t{email}\t{email}\tt\tFiller {i}\t{pw_hash}\t{stamp}\t{stamp}\n")
        if buf.tell() > 1 << 20:
            yield buf.getvalue().encode()
            buf = io.StringIO()
    yield buf.getvalue().encode()


def seed_filler(database_url: str, count: int, pw_hash: str | None = None) -> float:
    """Add `count` accounts to PostgreSQL with COPY; returns the seconds it took."""
    import psycopg

    pw_hash = pw_hash or password_hash()
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    stamp = dt.datetime.now(dt.UTC).isoformat()
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM accounts WHERE email_key LIKE 'filler%%'")
        have = cur.fetchone()[0]
        with cur.copy(
            "COPY accounts (id, email, email_key, email_verified, name, password_hash, "
            "created_at, updated_at) FROM STDIN"
        ) as copy:
            for chunk in _filler_rows(have, max(0, count - have), pw_hash, stamp):
                copy.write(chunk)
        cur.execute("ANALYZE accounts")
    return time.perf_counter() - started


def create_pg_database(name: str) -> str:
    """Drop and create a benchmark database; returns its SQLAlchemy URL."""
    import psycopg

    from bench.common import PG_ADMIN_URL

    if not name.replace("_", "").isalnum():
        raise ValueError(name)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(name: str) -> None:
    """Drop a benchmark database (at the end of a run: a million accounts take room)."""
    import psycopg

    from bench.common import PG_ADMIN_URL

    if not name.replace("_", "").isalnum():
        raise ValueError(name)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--accounts", type=int, default=1000, help="filler accounts in total")
    parser.add_argument("--users", type=int, default=0, help="sign-in test users to add")
    args = parser.parse_args()
    from bench.common import user_pool

    migrate(args.database_url)
    pw = password_hash()
    if args.users:
        seed_users(args.database_url, user_pool(args.users), pw)
    took = seed_filler(args.database_url, args.accounts, pw)
    print(json.dumps({"filler_accounts": args.accounts, "seconds": round(took, 1)}))


if __name__ == "__main__":
    main()
