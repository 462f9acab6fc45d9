"""`idp serve --workers N`: the application is built once in the supervising process and
each worker is forked from it (idp.cli.worker), and uvicorn's supervision still works:
a worker that dies is replaced, SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.cli.test_cli import environment, start_serve, wait_until_ready
from tests.conftest import free_port


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_workers_are_forked_from_the_built_application_and_replaced_when_they_die(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = environment(f"sqlite:///{tmp_path}/w.sqlite3", IDP_ISSUER=url)
    process = start_serve(port, env, workers=2)
    try:
        wait_until_ready(url, process)
        wait_for(lambda: len(children(process.pid)) == 2)
        workers = children(process.pid)
        # Forked: a worker runs the parent's command line. A spawned one would run
        # multiprocessing's `-c "from multiprocessing.spawn import spawn_main; ..."`.
        for pid in workers:
            assert cmdline(pid) == cmdline(process.pid)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(children(process.pid) - {victim}) == 2)
        replacement = (children(process.pid) - workers).pop()
        assert cmdline(replacement) == cmdline(process.pid)
        # Both workers serve: enough requests over fresh connections reach each.
        for _ in range(20):
            assert httpx.get(f"{url}/.well-known/openid-configuration").status_code == 200
            assert httpx.get(f"{url}/readyz").json() == {"status": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"Child process [{victim}] died" in stderr


def test_no_fork_while_another_thread_runs(tmp_path: Path) -> None:
    """A fork copies only the calling thread: with another one running, the workers are
    spawned afresh, as uvicorn does by default."""
    code = textwrap.dedent(
        """
        import threading
        from uvicorn import _subprocess
        import idp.cli.worker as worker
        stop = threading.Event()
        other = threading.Thread(target=stop.wait)
        other.start()
        refused = worker.build_before_forking()
        print(refused, worker._built is None, _subprocess.spawn.get_start_method())
        stop.set()
        other.join()
        alone = worker.build_before_forking()
        print(alone, worker._built is not None, _subprocess.spawn.get_start_method())
        """
    )
    env = environment(f"sqlite:///{tmp_path}/t.sqlite3", IDP_ISSUER="http://127.0.0.1:1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["False True spawn", "True True fork"]


def test_the_built_application_holds_no_connection_thread_or_socket(database_url: str) -> None:
    """What the workers inherit must be theirs alone once forked: building the
    application connects to nothing (the database pool connects on first use)."""
    code = textwrap.dedent(
        """
        import os, threading
        import idp.cli.worker as worker
        assert worker.build_before_forking()
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # the listing's own descriptor, closed by now
                pass
        engine = worker.create_app().state.services.engine
        print(threading.active_count(), sum(link.startswith("socket:") for link in links),
              engine.pool.checkedin() + engine.pool.checkedout())
        """
    )
    env = environment(database_url, IDP_ISSUER="http://127.0.0.1:1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0", "0"]


def test_a_forked_worker_starts_with_the_default_signal_handlers(tmp_path: Path) -> None:
    """Not its supervisor's, which only queue a signal for the supervisor's own loop: a
    SIGTERM sent while a worker starts must still end it."""
    code = textwrap.dedent(
        """
        import multiprocessing, signal
        import idp.cli.worker as worker
        from uvicorn.supervisors.multiprocess import SIGNALS
        assert worker.build_before_forking()
        for sig in SIGNALS:  # as uvicorn's supervisor does
            signal.signal(sig, lambda *_: None)

        def report(out):
            out.send(sorted(
                (signal.Signals(sig).name, signal.getsignal(sig) in (signal.SIG_DFL,
                 signal.default_int_handler)) for sig in SIGNALS))

        parent, child = multiprocessing.Pipe()
        process = multiprocessing.get_context("fork").Process(target=report, args=(child,))
        process.start()
        print(all(default for _, default in parent.recv()))
        process.join()
        print(signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL,))
        """
    )
    env = environment(f"sqlite:///{tmp_path}/s.sqlite3", IDP_ISSUER="http://127.0.0.1:1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]  # the child's defaults; the parent's kept
