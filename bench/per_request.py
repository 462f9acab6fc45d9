"""Server CPU per request of a sign-in flow, request by request, one flow at a time: where
a flow's CPU goes, for either provider.

    .venv/bin/python bench/per_request.py [--target ours-pg|ours-sqlite|peer] [--flows 60]

Flows run one after another, so between a request and its response the server does
nothing else; each request is charged the CPU time its server's threads gained meanwhile
(`/proc/<pid>/task/*/schedstat`, nanoseconds), its response included. Work a server does
after the response is sent lands on the next request, so rows are accurate to that.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx

from bench.common import password_hash, user_pool
from bench.flows import Driver, UserPicker
from bench.procstat import tree
from bench.seed import drop_pg_database
from bench.targets import Target, prepare_ours_pg, prepare_ours_sqlite, prepare_peer

_ID_IN_PATH = re.compile(r"/[A-Za-z0-9_-]{20,}")


def server_cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` and its descendants, in nanoseconds."""
    total = 0
    for p in tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


class MeteredDriver(Driver):
    """A `Driver` whose requests are charged the server CPU spent while each was open."""

    def __init__(self, target: Target, *args: Any) -> None:
        super().__init__(target, *args)
        assert target.proc is not None
        self.pid = target.proc.pid
        self.costs: dict[str, list[float]] = collections.defaultdict(list)
        self._started = 0

    def oauth(self, cookies: httpx.Cookies | None = None) -> Any:
        client = super().oauth(cookies)
        client.event_hooks = {"request": [self._before], "response": [self._after]}
        return client

    async def _before(self, request: httpx.Request) -> None:
        self._started = server_cpu_ns(self.pid)

    async def _after(self, response: httpx.Response) -> None:
        await response.aread()
        spent = server_cpu_ns(self.pid) - self._started
        request = response.request
        # The peer's interaction pages carry their id in the path.
        path = _ID_IN_PATH.sub("/{id}", request.url.path)
        self.costs[f"{request.method} {path}"].append(spent / 1e6)


async def _run(driver: MeteredDriver, flows: int) -> None:
    await driver.load_keys()
    for _ in range(3):  # warm-up: first statements, templates, caches
        await driver.sign_in()
    driver.costs.clear()
    for _ in range(flows):
        await driver.sign_in()


TARGETS = ("ours-pg", "ours-sqlite", "peer")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", choices=TARGETS, default="ours-pg")
    ap.add_argument("--flows", type=int, default=60)
    ap.add_argument("--port", type=int, default=None, help="default: 18611-18613 by target")
    args = ap.parse_args()
    port = args.port or 18611 + TARGETS.index(args.target)  # a stopped one's may linger
    users = user_pool(args.flows + 10)
    label = f"{args.target}-per-request"
    dbname = "idp_bench_per_request"
    if args.target == "ours-pg":
        target = prepare_ours_pg(label, port, users, password_hash(), dbname=dbname)
    elif args.target == "ours-sqlite":
        target = prepare_ours_sqlite(label, port, users, password_hash())
    else:
        target = prepare_peer(label, port, users, password_hash())
    target.start(1, None)
    try:
        driver = MeteredDriver(target, users, UserPicker(users))
        asyncio.run(_run(driver, args.flows))
    finally:
        target.stop()
        if args.target == "ours-pg":
            drop_pg_database(dbname)
    total = 0.0
    print(f"{args.target}: server CPU per request, ms (median of {args.flows} flows)")
    for name, values in driver.costs.items():
        per_flow = sum(values) / args.flows
        total += per_flow
        print(f"  {name:32s} {statistics.median(values):7.2f}  ({len(values)} requests)")
    print(f"  {'per flow (mean)':32s} {total:7.2f}")


if __name__ == "__main__":
    main()
