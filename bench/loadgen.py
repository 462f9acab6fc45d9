"""wrk as the load generator for single-request scenarios (see lua/)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import LUA, VAR


@dataclass
class WrkResult:
    ok: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    raw: dict[str, object]

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def basic(client_id: str, secret: str) -> str:
    from urllib.parse import quote

    # RFC 6749 2.3.1: form-urlencode both parts before Basic encoding.
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def run_wrk(
    url: str,
    *,
    duration: float,
    threads: int,
    connections: int,
    cpus: str | None,
    method: str = "GET",
    body: str = "",
    auth: str = "",
    queue: list[str] | None = None,
    mode: str = "",
    path: str = "",
) -> WrkResult:
    """Run wrk against `url` (loopback only). With `queue`, POST its bodies one by one
    (`mode` code or refresh) and stop once they are used up."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("load tests only target 127.0.0.1")
    env = dict(
        os.environ,
        BENCH_LUA_DIR=str(LUA),
        BENCH_METHOD=method,
        BENCH_BODY=body,
        BENCH_AUTH=auth,
        BENCH_THREADS=str(threads),
        BENCH_MODE=mode,
        BENCH_PATH=path,
    )
    script = LUA / "static.lua"
    if queue is not None:
        VAR.mkdir(parents=True, exist_ok=True)
        qfile = VAR / f"queue-{os.getpid()}-{time.monotonic_ns()}.txt"
        qfile.write_text("\n".join(queue) + "\n")
        env["BENCH_QUEUE_FILE"] = str(qfile)
        script = LUA / "queue.lua"
    secs = max(1, round(duration))
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{secs}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    exhausted = 0

    def reader() -> None:
        nonlocal exhausted
        assert proc.stdout
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("BENCH_EXHAUSTED"):
                exhausted += 1
                if exhausted >= threads and proc.poll() is None:
                    proc.send_signal(signal.SIGINT)  # wrk then reports and exits

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        proc.wait(timeout=secs + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
        t.join(timeout=5)
        if queue is not None:
            Path(env["BENCH_QUEUE_FILE"]).unlink(missing_ok=True)
    data = next((json.loads(x.split(" ", 1)[1]) for x in lines if x.startswith("BENCH_JSON")), None)
    if data is None:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"wrk gave no result: {''.join(lines)[-500:]} {err[-500:]}")
    counted = data["counted"] in (True, "true")
    requests = int(data["requests"])
    errors = (
        int(data["status_errors"])
        + int(data["connect_errors"])
        + int(data["read_errors"])
        + int(data["write_errors"])
        + int(data["timeouts"])
    )
    if counted:
        ok = int(data["ok"])
        seconds = (
            int(data["active_us"]) / 1e6
            if queue is not None and data["active_us"]
            else int(data["duration_us"]) / 1e6
        )
    else:
        ok = requests - int(data["status_errors"])
        seconds = int(data["duration_us"]) / 1e6
    return WrkResult(
        ok=ok,
        requests=requests,
        seconds=seconds,
        p50_ms=int(data["p50_us"]) / 1000,
        p99_ms=int(data["p99_us"]) / 1000,
        errors=errors if not counted else int(data["bad"]),
        raw=data,
    )
