"""Benchmark our provider side by side with the reference Node.js provider (oidc-provider).

    .venv/bin/python bench/run.py [--quick] [--workers 1,2] [--targets ours-sqlite,ours-pg,peer]
                                  [--scenarios ...] [--rounds N] [--scale 1000,1000000 | --no-scale]

Starts every target on 127.0.0.1, measures them alternately (A, B, C, A, B, C, ... for each
scenario, `--rounds` rounds) and writes bench/results/latest.{md,json,png}. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import report
from bench.common import PEER_DIR, RESULTS, password_hash, require_tool, user_pool
from bench.flows import UserPicker
from bench.scenarios import (
    SCENARIOS,
    Load,
    Measurement,
    Plan,
    TargetState,
    load_for,
    measure,
    probe,
    warm,
)
from bench.seed import drop_pg_database, seed_filler
from bench.targets import Target, flush_redis, prepare_ours_pg, prepare_ours_sqlite, prepare_peer

PORTS = {"ours-sqlite": 18101, "ours-pg": 18102, "peer": 13101, "ours-pg-scale": 18103}
SCALE_SCENARIOS = ["client_credentials", "refresh_token", "authorization_code", "signin"]


def log(msg: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def argon2_seconds() -> dict[str, float]:
    """CPU seconds of one argon2id verification (m=19456, t=2, p=1) in each runtime, pinned
    to the servers' core: the bound on sign-ins per second per core. The least of 15 runs:
    on a shared machine, contention only ever adds CPU time."""
    from bench.common import PASSWORD

    h = password_hash()
    py = (
        "import sys,time;from argon2 import PasswordHasher as P;p=P();h,w=sys.argv[1:3];"
        "p.verify(h,w);s=[]\n"
        "for _ in range(15):\n"
        " t=time.process_time();p.verify(h,w);s.append(time.process_time()-t)\n"
        "print(min(s))"
    )
    js = (
        "const a=require('argon2');(async()=>{const h=process.argv[1],p=process.argv[2];"
        "const s=[];await a.verify(h,p);"
        "for(let i=0;i<15;i++){const c=process.cpuUsage();await a.verify(h,p);"
        "const d=process.cpuUsage(c);s.push((d.user+d.system)/1e6)}"
        "console.log(Math.min(...s))})()"
    )
    out: dict[str, float] = {}
    for key, cmd, cwd in (
        ("python_argon2_cffi", [sys.executable, "-c", py, h, PASSWORD], None),
        ("node_argon2", ["node", "-e", js, h, PASSWORD], PEER_DIR),
    ):
        res = subprocess.run(
            ["taskset", "-c", "0", *cmd], cwd=cwd, capture_output=True, text=True, check=False
        )
        try:
            out[key] = float(res.stdout.strip())
        except ValueError:
            out[key] = float("nan")
    return out


def environment() -> dict[str, Any]:
    def cmd(*args: str, cwd: str | None = None) -> str:
        try:
            return subprocess.run(
                args, capture_output=True, text=True, cwd=cwd, check=False
            ).stdout.strip()
        except OSError:
            return "?"

    peer_version = "?"
    try:
        lock = json.loads((PEER_DIR / "package-lock.json").read_text())
        peer_version = lock["packages"]["node_modules/oidc-provider"]["version"]
    except (OSError, KeyError, ValueError):
        pass
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    try:
        import authlib
        import uvicorn

        versions = {"authlib": authlib.__version__, "uvicorn": uvicorn.__version__}
    except ImportError:
        versions = {}
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "node": cmd("node", "--version"),
        "oidc_provider": peer_version,
        "wrk": cmd("wrk", "--version").splitlines()[0] if cmd("wrk", "--version") else "?",
        "git": cmd("git", "rev-parse", "--short", "HEAD"),
        "loadavg_start": os.getloadavg(),
        **versions,
    }


def median_of(rows: list[Measurement]) -> dict[str, Any]:
    ok = [r for r in rows if r.status == "ok"]
    if not ok:
        first = rows[0] if rows else None
        return {"status": first.status if first else "missing", "note": first.note if first else ""}
    out: dict[str, Any] = {
        "status": "ok",
        "rounds": len(ok),
        "note": "; ".join(sorted({r.note for r in ok if r.note})),
    }
    for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_op", "db_cpu_ms_per_op"):
        vals = [getattr(r, key) for r in ok if getattr(r, key) is not None]
        out[key] = statistics.median(vals) if vals else None
    out["ops"] = sum(r.ops for r in ok)
    return out


def start_targets(targets: list[Target], load: Load, plan: Plan) -> dict[str, dict[str, Any]]:
    """Start each target (`ready_samples` times, keeping the last one up)."""
    info: dict[str, dict[str, Any]] = {}
    for t in targets:
        if not t.database_exists() and t.reprepare is not None:
            log(f"  {t.label}: its database is gone (dropped by someone else?); making it again")
            t.reprepare()
            PICKERS.pop(t.label, None)  # a fresh database has fresh TOTP replay state
        readies = []
        for i in range(plan.ready_samples):
            readies.append(t.start(load.workers, load.server_cpus))
            if i < plan.ready_samples - 1:
                t.stop()
                time.sleep(0.3)
        time.sleep(0.5)
        s = t.sample()
        info[t.label] = {
            "ready_s": statistics.median(readies),
            "ready_samples": readies,
            "rss_idle_total": s.rss_total,
            "rss_idle_per_worker": s.rss_workers / max(1, s.workers),
            "processes": len(s.cpu),
            "workers_seen": s.workers,
        }
        log(
            f"  {t.label}: ready in {statistics.median(readies):.2f} s, "
            f"idle RSS {s.rss_workers / max(1, s.workers) / 2**20:.0f} MiB per worker"
        )
    return info


#: One picker per target for the whole run: a TOTP step used by one phase stays used in the next.
PICKERS: dict[str, UserPicker] = {}


def run_matrix(
    targets: list[Target], users: list[Any], workers: int, plan: Plan, scenarios: list[str]
) -> dict[str, Any]:
    load = load_for(workers)
    log(f"workers={workers}: starting {', '.join(t.label for t in targets)}")
    info = start_targets(targets, load, plan)
    states = {}
    try:
        for t in targets:
            picker = PICKERS.setdefault(t.label, UserPicker(users))
            st = TargetState(t, users, picker)
            probe(st)
            states[t.label] = st
            for name, why in st.unavailable.items():
                log(f"  {t.label}: {name} skipped: {why}")
        rows: list[Measurement] = []
        for scenario in scenarios:
            for st in states.values():
                warm(st, scenario, load, plan)
            for rnd in range(1, plan.rounds + 1):
                for t in targets:  # alternate: A, B, C, A, B, C, ...
                    m = measure(states[t.label], scenario, load, plan, rnd)
                    rows.append(m)
                    if m.status == "ok":
                        log(
                            f"  w{workers} {scenario:<18} r{rnd} {t.label:<12} {m.rps:9.1f}/s "
                            f"p50 {m.p50_ms:7.2f} ms p99 {m.p99_ms:8.2f} ms "
                            f"cpu {m.cpu_ms_per_op:7.3f} ms/op"
                            f"{'  (' + m.note + ')' if m.note else ''}"
                        )
                    elif rnd == 1:
                        log(f"  w{workers} {scenario:<18} {t.label:<12} {m.status}: {m.note}")
        for t in targets:
            s = t.sample()
            info[t.label].update(
                rss_after_total=s.rss_total,
                rss_after_per_worker=s.rss_workers / max(1, s.workers),
            )
    finally:
        for t in targets:
            t.stop()
    medians = {
        sc: {
            t.label: median_of([r for r in rows if r.scenario == sc and r.target == t.label])
            for t in targets
        }
        for sc in scenarios
    }
    return {
        "workers": workers,
        "load": load.__dict__,
        "servers": info,
        "medians": medians,
        "rounds": [r.as_dict() for r in rows],
    }


def scale_dbname(size: int) -> str:
    return f"idp_bench_scale_{size}"


def run_scale(
    users: list[Any], plan: Plan, sizes: list[int], pw: str, scenarios: list[str]
) -> dict[str, Any]:
    """Our provider on PostgreSQL with each of `sizes` accounts (one database and one
    server per size), measured alternately like the main matrix: 1 worker, pinned."""
    users = users[: min(len(users), *sizes)]  # every size counts all accounts, pool included
    targets, seeded = [], {}
    for i, size in enumerate(sizes):
        label = f"ours-pg-{size}"
        t = prepare_ours_pg(label, PORTS["ours-pg-scale"] + i, users, pw, dbname=scale_dbname(size))
        log(f"scale: seeding {size:,} accounts")
        seeded[size] = seed_filler(t.database_url or "", max(0, size - len(users)), pw)
        log(f"scale: seeded in {seeded[size]:.1f} s")
        targets.append(t)
    res = run_matrix(targets, users, 1, plan, scenarios)
    out: dict[str, Any] = {"alternated": True, "matrix": res, "sizes": {}}
    for size, t in zip(sizes, targets, strict=True):
        out["sizes"][str(size)] = {
            "seed_seconds": seeded[size],
            "servers": {"ours-pg-scale": res["servers"][t.label]},
            "medians": {sc: {"ours-pg-scale": per[t.label]} for sc, per in res["medians"].items()},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Side-by-side benchmark with oidc-provider.")
    parser.add_argument("--quick", action="store_true", help="short runs to check the harness")
    parser.add_argument("--workers", default=None, help="comma list, default 1,2 (quick: 1)")
    parser.add_argument("--targets", default="ours-sqlite,ours-pg,peer")
    parser.add_argument("--scenarios", default=",".join(s for s, _ in SCENARIOS))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--scale", default=None, help="account counts, default 1000,1000000 (quick: 1000,20000)"
    )
    parser.add_argument("--no-scale", action="store_true")
    parser.add_argument("--scale-only", action="store_true", help="only the scale runs")
    parser.add_argument(
        "--keep-databases", action="store_true", help="keep idp_bench and idp_bench_scale_*"
    )
    parser.add_argument("--users", type=int, default=None, help="sign-in user pool size")
    parser.add_argument("--out", default=str(RESULTS / "latest"), help="results path prefix")
    args = parser.parse_args()

    require_tool("wrk", "apt-get install -y wrk (make bench does it)")
    require_tool("node", "Node.js 20 or newer is needed for the peer")
    require_tool("taskset", "apt-get install -y util-linux")
    plan = Plan.make(args.quick, args.rounds)
    workers = [int(w) for w in (args.workers or ("1" if args.quick else "1,2")).split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    sizes = (
        []
        if args.no_scale
        else [
            int(s)
            for s in (args.scale or ("1000,20000" if args.quick else "1000,1000000")).split(",")
        ]
    )
    users = user_pool(args.users or (600 if args.quick else 4000))

    env = environment()
    log(f"plan: {plan}; workers {workers}; {len(users)} sign-in users")
    pw = password_hash()
    env["argon2_verify_cpu_s"] = argon2_seconds()
    log(f"argon2id verification CPU: {env['argon2_verify_cpu_s']}")

    wanted = [] if args.scale_only else args.targets.split(",")
    targets: list[Target] = []
    notes: dict[str, list[str]] = {}
    for label in wanted:
        log(f"preparing {label}")
        if label == "ours-sqlite":
            targets.append(prepare_ours_sqlite(label, PORTS[label], users, pw))
        elif label == "ours-pg":
            targets.append(prepare_ours_pg(label, PORTS[label], users, pw))
        elif label == "peer":
            targets.append(prepare_peer(label, PORTS[label], users, pw))
        else:
            raise SystemExit(f"unknown target {label}")
    results: dict[str, Any] = {
        "environment": env,
        "plan": plan.__dict__,
        "matrix": [],
        "scenarios": dict(SCENARIOS),
    }
    try:
        for w in workers if targets else []:
            results["matrix"].append(run_matrix(targets, users, w, plan, scenarios))
            report.write(results, args.out)
        if sizes:
            results["scale"] = run_scale(
                users, plan, sizes, pw, [s for s in SCALE_SCENARIOS if s in scenarios]
            )
    finally:
        for t in targets:
            t.stop()
            notes[t.label] = t.notes
        results["notes"] = notes
        env["loadavg_end"] = os.getloadavg()
        report.write(results, args.out)
        if "peer" in wanted:
            with contextlib.suppress(RuntimeError):
                flush_redis(13)  # the peer cluster's store
        if not args.keep_databases:
            for name in ("idp_bench", *(scale_dbname(n) for n in sizes)):
                drop_pg_database(name)
    log(f"wrote {args.out}.md, .json, .png")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
