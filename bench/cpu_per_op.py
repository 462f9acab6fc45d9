"""Server CPU per operation of some of our scenarios, quickly, without the peer: for
checking a hot-path change (bench/run.py is the real, side-by-side measurement).

    .venv/bin/python bench/cpu_per_op.py [--db pg|sqlite] [--seconds 8]
        [--scenarios client_credentials,introspection,refresh_token,authorization_code,signin]
        [--browsers 12] [--port 18509] [--dbname idp_bench_cpu]

`signin` runs complete sign-in flows (bench/flows.py) with `--browsers` concurrent browsers
and prints the CPU per flow with and without one argon2id verification.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import password_hash, user_pool
from bench.flows import UserPicker, run_flows
from bench.loadgen import run_wrk
from bench.procstat import cpu_delta, postgres_backends_cpu, sample
from bench.scenarios import Plan, TargetState, _wrk_args, load_for, probe
from bench.seed import drop_pg_database
from bench.targets import Target, prepare_ours_pg, prepare_ours_sqlite


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["sqlite", "pg"], default="pg")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument(
        "--scenarios", default="client_credentials,introspection,refresh_token,authorization_code"
    )
    ap.add_argument(
        "--browsers", type=int, default=None, help="for signin (default: as make bench)"
    )
    ap.add_argument("--port", type=int, default=18509)
    ap.add_argument("--dbname", default="idp_bench_cpu")
    args = ap.parse_args()
    users = user_pool(600)  # a TOTP code is good once: enough accounts for 30 s of flows
    label = f"ours-{args.db}-cpu-{args.port}"
    target = (
        prepare_ours_sqlite(label, args.port, users, password_hash())
        if args.db == "sqlite"
        else prepare_ours_pg(label, args.port, users, password_hash(), dbname=args.dbname)
    )
    load = load_for(1)
    target.start(1, load.server_cpus)
    try:
        state = TargetState(target, users, UserPicker(users))
        probe(state)
        plan = Plan.make(quick=False, rounds=1)
        plan.codes = 8000
        assert target.proc
        for scenario in args.scenarios.split(","):
            if scenario == "signin":
                _signin(
                    state, target, args, load.browsers if args.browsers is None else args.browsers
                )
                continue
            wrk_args = _wrk_args(state, scenario, plan, load)
            target.analyze()
            before = sample(target.proc.pid)
            pg_before = postgres_backends_cpu(args.dbname) if args.db == "pg" else {}
            result = run_wrk(
                duration=args.seconds, threads=1, connections=32, cpus=load.client_cpus, **wrk_args
            )
            cpu = sample(target.proc.pid).cpu_since(before)
            pg_cpu = (
                cpu_delta(pg_before, postgres_backends_cpu(args.dbname)) if args.db == "pg" else 0.0
            )
            ops = result.ok
            print(
                f"{scenario:20s} {ops / result.seconds:8.0f} ops/s  "
                f"{1000 * cpu / max(ops, 1):6.2f} ms CPU/op  "
                f"(+ PostgreSQL {1000 * pg_cpu / max(ops, 1):.2f})  p50 {result.p50_ms:.1f} ms",
                flush=True,
            )
    finally:
        target.stop()
        if args.db == "pg":
            drop_pg_database(args.dbname)


def _signin(state: TargetState, target: Target, args: argparse.Namespace, browsers: int) -> None:
    from bench.run import argon2_seconds

    assert target.proc
    argon2_ms = 1000 * argon2_seconds()["python_argon2_cffi"]
    target.analyze()
    before = sample(target.proc.pid)
    pg_before = postgres_backends_cpu(args.dbname) if args.db == "pg" else {}
    run = asyncio.run(run_flows(state.driver, concurrency=browsers, duration=args.seconds))
    cpu = sample(target.proc.pid).cpu_since(before)
    pg_cpu = cpu_delta(pg_before, postgres_backends_cpu(args.dbname)) if args.db == "pg" else 0.0
    flows = max(run.flows, 1)
    per_flow = 1000 * cpu / flows
    print(
        f"{'signin':20s} {run.flows / run.seconds:8.1f} flows/s  {per_flow:6.2f} ms CPU/flow "
        f"({per_flow - argon2_ms:.2f} less one argon2id)  "
        f"(+ PostgreSQL {1000 * pg_cpu / flows:.2f})  {run.failures} failed, {browsers} browsers",
        flush=True,
    )


if __name__ == "__main__":
    main()
