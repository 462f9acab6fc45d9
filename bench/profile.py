"""Profile one of our scenarios with py-spy while wrk loads it.

    .venv/bin/python bench/profile.py [--scenario client_credentials] [--db sqlite|pg]
        [--seconds 10]

Writes bench/results/profile-<scenario>.collapsed (py-spy's collapsed stacks, for any flame
graph tool) and .txt (the top frames by own time and by inclusive time).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import threading

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import RESULTS, VENV_BIN, password_hash, user_pool
from bench.flows import UserPicker, run_flows
from bench.loadgen import run_wrk
from bench.scenarios import Plan, TargetState, _wrk_args, load_for, probe
from bench.seed import drop_pg_database
from bench.targets import prepare_ours_pg, prepare_ours_sqlite


def top_frames(collapsed: str, n: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        own[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    out = [f"{total} samples", "", "Own time (where the CPU actually is):"]
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n)]
    out += ["", "Inclusive time (a frame and what it calls):"]
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(n)]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="client_credentials")
    ap.add_argument("--db", choices=["sqlite", "pg"], default="pg")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument(
        "--wall",
        action="store_true",
        help="sample every thread, idle ones too (where requests wait), instead of the GIL holder",
    )
    ap.add_argument("--port", type=int, default=18109, help="so two profiles can run at once")
    ap.add_argument("--dbname", default="idp_bench_profile", help="PostgreSQL database to use")
    args = ap.parse_args()
    users = user_pool(600)  # a TOTP code is good once: enough accounts for 30 s of flows
    pw = password_hash()
    label = f"ours-{args.db}-profile-{args.port}"
    prep = prepare_ours_sqlite if args.db == "sqlite" else prepare_ours_pg
    target = (
        prep(label, args.port, users, pw)
        if args.db == "sqlite"
        else prep(label, args.port, users, pw, dbname=args.dbname)
    )
    load = load_for(1)
    target.start(1, load.server_cpus)
    try:
        state = TargetState(target, users, UserPicker(users))
        probe(state)
        if args.scenario in state.unavailable:
            raise SystemExit(f"{args.scenario}: {state.unavailable[args.scenario]}")
        plan = Plan.make(quick=False, rounds=1)
        plan.codes = 6000
        result: dict[str, object] = {}
        if args.scenario == "signin":

            def load_it() -> None:
                run = asyncio.run(
                    run_flows(state.driver, concurrency=load.browsers, duration=args.seconds + 2)
                )
                result["wrk"] = f"{run.flows} flows in {run.seconds:.1f} s, {run.failures} failed"
                if run.errors:  # what went wrong, so a failing flow is not only a count
                    result["wrk"] += "\nfirst failures: " + "; ".join(run.errors[:3])

        else:
            wrk_args = _wrk_args(state, args.scenario, plan, load)

            def load_it() -> None:
                result["wrk"] = run_wrk(
                    duration=args.seconds + 2,
                    threads=1,
                    connections=32,
                    cpus=load.client_cpus,
                    **wrk_args,
                )

        th = threading.Thread(target=load_it)
        th.start()
        RESULTS.mkdir(parents=True, exist_ok=True)
        base = RESULTS / f"profile-{args.scenario}{'-wall' if args.wall else ''}"
        spy = str(VENV_BIN / "py-spy")
        assert target.proc
        pid = str(target.proc.pid)
        raw = base.with_suffix(".collapsed")
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                pid,
                "--duration",
                str(args.seconds),
                "--rate",
                "250",
                "--gil",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            check=True,
        )
        th.join()
        text = top_frames(raw.read_text())
        wrk = result.get("wrk")
        header = (
            f"py-spy {'--idle (wall clock)' if args.wall else '--gil'} profile of our "
            f"{args.scenario} on {args.db}, "
            f"1 worker pinned, wrk 32 connections\n{wrk}\n\n"
        )
        base.with_suffix(".txt").write_text(header + text)
        print(header + text)
    finally:
        target.stop()
        if args.db == "pg":
            drop_pg_database(args.dbname)


if __name__ == "__main__":
    main()
