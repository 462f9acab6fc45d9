"""The real `idp` entry point, run as a subprocess against real databases.

Every failure must be one line on stderr with a non-zero status, never a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import pty
import secrets
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import httpx

from idp import migrations
from idp.accounts.passwords import verify_password
from idp.db import make_engine, make_session_factory
from idp.models import Account
from tests.conftest import free_port

PASSWORD = "correct horse battery staple"


def idp_command() -> list[str]:
    """The installed `idp` script beside this interpreter (what people run)."""
    script = Path(sys.executable).parent / "idp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "idp"]


def environment(database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    if database_url is not None:
        env["IDP_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_idp(
    *args: str, env: dict[str, str], stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*idp_command(), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1, "--json prints exactly one line"
    return json.loads(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("idp: ")
    return lines[0]


def test_users_create_reads_the_password_from_stdin_and_prints_json(database_url: str) -> None:
    env = environment(database_url)
    created = ok_json(
        run_idp(
            "users",
            "create",
            "--email",
            "  Pharmacist@Example.ORG ",
            "--name",
            "Asha Patel",
            "--org",
            "High Street Pharmacy",
            "--org-role",
            "org_admin",
            "--password-stdin",
            "--json",
            env=env,
            stdin=PASSWORD + "\n",
        )
    )
    assert created["email"] == "Pharmacist@Example.ORG"
    assert created["organisations"] == [{"name": "High Street Pharmacy", "role": "org_admin"}]
    assert "password" not in json.dumps(created).lower()

    shown = ok_json(
        run_idp("users", "show", "--email", "pharmacist@example.org", "--json", env=env)
    )
    assert shown["id"] == created["id"]
    by_id = ok_json(run_idp("users", "show", "--id", created["id"], "--json", env=env))
    assert by_id["email"] == created["email"]

    # The trailing newline from `echo` is not part of the stored password.
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as db:
            account = db.get(Account, created["id"])
            assert account is not None
            assert account.password_hash is not None
            assert verify_password(account.password_hash, PASSWORD)
            assert not verify_password(account.password_hash, PASSWORD + "\n")
    finally:
        engine.dispose()


def test_a_taken_address_in_another_case_is_refused_in_one_line(database_url: str) -> None:
    env = environment(database_url)
    first = run_idp(
        "users",
        "create",
        "--email",
        "a@example.org",
        "--password-stdin",
        "--json",
        env=env,
        stdin=PASSWORD,
    )
    ok_json(first)
    again = run_idp(
        "users",
        "create",
        "--email",
        "A@EXAMPLE.org",
        "--password-stdin",
        "--json",
        env=env,
        stdin=PASSWORD,
    )
    line = assert_one_line_error(again, 1)
    assert "already used" in line
    assert again.stdout == ""
    listed = ok_json(run_idp("users", "list", "--json", env=env))
    assert [u["email"] for u in listed["users"]] == ["a@example.org"]


def test_refused_passwords_and_addresses_say_why(database_url: str) -> None:
    env = environment(database_url)
    weak = run_idp(
        "users",
        "create",
        "--email",
        "b@example.org",
        "--password-stdin",
        env=env,
        stdin="password\n",
    )
    assert "password refused" in assert_one_line_error(weak, 1)
    bad = run_idp(
        "users", "create", "--email", "not-an-address", "--password-stdin", env=env, stdin=PASSWORD
    )
    assert "invalid email address" in assert_one_line_error(bad, 1)
    no_flag = run_idp("users", "create", "--email", "c@example.org", env=env, stdin=PASSWORD)
    assert "--password-stdin" in assert_one_line_error(no_flag, 1)
    assert ok_json(run_idp("users", "list", "--json", env=env)) == {"users": []}


def test_disable_and_set_email(database_url: str) -> None:
    env = environment(database_url)
    ok_json(
        run_idp(
            "users",
            "create",
            "--email",
            "old@example.org",
            "--password-stdin",
            "--json",
            env=env,
            stdin=PASSWORD,
        )
    )
    moved = ok_json(
        run_idp(
            "users",
            "set-email",
            "--email",
            "OLD@example.org",
            "--new-email",
            "new@example.org",
            "--json",
            env=env,
        )
    )
    assert moved["email"] == "new@example.org"
    disabled = ok_json(run_idp("users", "disable", "--email", "new@example.org", "--json", env=env))
    assert disabled["disabled"] is True
    missing = run_idp("users", "disable", "--email", "old@example.org", env=env)
    assert "no account" in assert_one_line_error(missing, 1)


def test_clients_create_prints_the_secret_once(database_url: str) -> None:
    env = environment(database_url)
    confidential = ok_json(
        run_idp(
            "clients",
            "create",
            "--name",
            "PharmOutcomes",
            "--redirect-uri",
            "https://pharmoutcomes.org/oidc/callback",
            "--redirect-uri",
            "https://pharmoutcomes.org/oidc/callback2",
            "--json",
            env=env,
        )
    )
    assert len(confidential["client_secret"]) >= 32
    assert confidential["redirect_uris"] == [
        "https://pharmoutcomes.org/oidc/callback",
        "https://pharmoutcomes.org/oidc/callback2",
    ]
    public = ok_json(
        run_idp(
            "clients",
            "create",
            "--name",
            "Mobile",
            "--redirect-uri",
            "https://app.example.org/cb",
            "--public",
            "--client-id",
            "mobile-app",
            "--json",
            env=env,
        )
    )
    assert public["client_id"] == "mobile-app"
    assert "client_secret" not in public

    shown = ok_json(
        run_idp("clients", "show", "--client-id", confidential["client_id"], "--json", env=env)
    )
    assert "client_secret" not in shown
    assert confidential["client_secret"] not in json.dumps(shown)
    listed = ok_json(run_idp("clients", "list", "--json", env=env))
    assert {c["client_id"] for c in listed["clients"]} == {confidential["client_id"], "mobile-app"}

    ok_json(run_idp("clients", "delete", "--client-id", "mobile-app", "--json", env=env))
    gone = run_idp("clients", "show", "--client-id", "mobile-app", env=env)
    assert "no client" in assert_one_line_error(gone, 1)


def test_bad_client_registrations_are_one_line(database_url: str, tmp_path: Path) -> None:
    env = environment(database_url)
    fragment = run_idp(
        "clients",
        "create",
        "--name",
        "X",
        "--redirect-uri",
        "https://app.example/cb#frag",
        env=env,
    )
    assert "redirect" in assert_one_line_error(fragment, 1).lower()
    missing = run_idp(
        "clients",
        "create",
        "--name",
        "X",
        "--redirect-uri",
        "https://app.example/cb",
        "--token-endpoint-auth-method",
        "private_key_jwt",
        "--jwks-file",
        str(tmp_path / "absent.json"),
        env=env,
    )
    assert "cannot read --jwks-file" in assert_one_line_error(missing, 1)
    assert ok_json(run_idp("clients", "list", "--json", env=env)) == {"clients": []}


def test_an_unknown_option_or_command_is_one_line(tmp_path: Path) -> None:
    env = environment(f"sqlite:///{tmp_path}/x.sqlite3")
    line = assert_one_line_error(run_idp("users", "create", "--emial", "x@example.org", env=env), 2)
    assert "--emial" in line
    assert "idp users create --help" in line
    assert_one_line_error(run_idp("frobnicate", env=env), 2)
    assert_one_line_error(run_idp("serve", "--port", "not-a-port", env=env), 2)
    # There is no way to pass a password on the command line, where `ps` would show it.
    argv_password = run_idp(
        "users", "create", "--email", "x@example.org", "--password", "Hunter2-secret", env=env
    )
    assert "--password" in assert_one_line_error(argv_password, 2)
    assert "Hunter2-secret" not in argv_password.stderr


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    url = f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{free_port()}/idp"
    result = run_idp("users", "list", env=environment(url))
    line = assert_one_line_error(result, 4)
    assert line.startswith("idp: cannot reach the database at postgresql+psycopg://postgres:***@")
    assert "IDP_DATABASE_URL" in line
    assert "s3cret-pw" not in result.stderr


def test_an_unmigrated_database_is_one_line_until_migrated(tmp_path: Path) -> None:
    env = environment(f"sqlite:///{tmp_path}/fresh.sqlite3")
    line = assert_one_line_error(run_idp("users", "list", env=env), 4)
    assert line == "idp: database is not migrated: run `idp migrate`"
    migrated = ok_json(run_idp("migrate", "--json", env=env))
    assert migrated["revision"] == migrations.head_revision()
    assert migrated["from_revision"] is None
    assert ok_json(run_idp("users", "list", "--json", env=env)) == {"users": []}


def test_bad_configuration_names_the_setting(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.sqlite3"
    production = run_idp("users", "list", env=environment(url, IDP_ENV="production"))
    line = assert_one_line_error(production, 3)
    assert line.startswith("idp: configuration error: IDP_ISSUER")
    typo = run_idp("migrate", env=environment(url, IDP_SESSION_IDLE_SECONDS="an hour"))
    assert "IDP_SESSION_IDLE_SECONDS" in assert_one_line_error(typo, 3)


def wait_until_ready(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("idp serve did not answer /healthz")


def start_serve(port: int, env: dict[str, str], *, workers: int) -> subprocess.Popen[str]:
    """`idp serve` on 127.0.0.1:`port` in the background, its output captured."""
    command = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return subprocess.Popen(
        [*idp_command(), *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_migrates_a_development_database_and_answers_probes(tmp_path: Path) -> None:
    port = free_port()
    env = environment(f"sqlite:///{tmp_path}/serve.sqlite3", IDP_ISSUER=f"http://127.0.0.1:{port}")
    process = start_serve(port, env, workers=2)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ok"}
        assert "server" not in ready.headers
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        env = environment(f"sqlite:///{tmp_path}/busy.sqlite3")
        result = run_idp("serve", "--port", str(port), env=env, timeout=30)
    line = assert_one_line_error(result, 1)
    assert f"cannot listen on 127.0.0.1:{port}" in line


def test_production_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    env = environment(
        f"sqlite:///{tmp_path}/prod.sqlite3",
        IDP_ENV="production",
        IDP_ISSUER="https://login.example.org",
        IDP_ENCRYPTION_KEYS=f"k1:{key}",
    )
    result = run_idp("serve", "--port", str(free_port()), env=env, timeout=30)
    line = assert_one_line_error(result, 4)
    assert line == "idp: database is not migrated: run `idp migrate`"


def test_on_a_terminal_the_password_is_prompted_without_echo(tmp_path: Path) -> None:
    env = environment(f"sqlite:///{tmp_path}/tty.sqlite3")
    ok_json(run_idp("migrate", "--json", env=env))
    master, slave = pty.openpty()

    def take_terminal() -> None:  # the pty becomes the child's /dev/tty, as in a shell
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [
            *idp_command(),
            "users",
            "create",
            "--email",
            "tty@example.org",
            "--password-stdin",
            "--json",
        ],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    try:
        shown = b""
        deadline = time.monotonic() + 30
        while b"Password: " not in shown and time.monotonic() < deadline:
            shown += os.read(master, 1024)
        assert b"Password: " in shown
        os.write(master, PASSWORD.encode() + b"\n")
        out, err = process.communicate(timeout=30)
        echoed = b""
        with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
            while chunk := os.read(master, 1024):
                echoed += chunk
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert json.loads(out)["email"] == "tty@example.org"
    assert PASSWORD.encode() not in shown + echoed
