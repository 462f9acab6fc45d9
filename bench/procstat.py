"""CPU time and memory of a server's process tree, read from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return kids
    for task in tasks:
        try:
            kids.extend(int(x) for x in (task / "children").read_text().split())
        except OSError:
            continue
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn workers, node cluster workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if not Path(f"/proc/{p}").exists():
            continue
        out.append(p)
        todo.extend(_children(p))
    return out


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces; fields resume after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one live process, in seconds."""
    f = _stat(pid)
    if f is None:
        return 0.0
    return (int(f[11]) + int(f[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def rss_bytes(pid: int) -> int:
    f = _stat(pid)
    if f is None:
        return 0
    return int(f[21]) * PAGE  # field 24 of stat(5)


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


@dataclass
class TreeSample:
    """One look at a process tree: total CPU seconds, and RSS of all and of workers."""

    cpu: dict[int, float]
    rss_total: int
    rss_workers: int
    workers: int

    def cpu_since(self, before: TreeSample) -> float:
        """CPU seconds spent between two samples (processes that died are left out)."""
        return sum(v - before.cpu.get(p, 0.0) for p, v in self.cpu.items())


def sample(pid: int) -> TreeSample:
    """Sample the tree of `pid`. Workers are its leaves (the serving processes: the one
    process itself, uvicorn's or node cluster's workers), less multiprocessing's helper."""
    pids = tree(pid)
    cpu = {p: cpu_seconds(p) for p in pids}
    rss = {p: rss_bytes(p) for p in pids}
    workers = [p for p in pids if not _children(p) and "resource_tracker" not in command(p)] or [
        pid
    ]
    return TreeSample(
        cpu=cpu,
        rss_total=sum(rss.values()),
        rss_workers=sum(rss[p] for p in workers if p in rss),
        workers=len(workers),
    )


def postgres_backends_cpu(dbname: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving `dbname` (their process title reads
    `postgres: USER DBNAME HOST(PORT) STATE`). Backends that exit between two samples are
    missed, so this is a lower bound of the database's CPU."""
    out: dict[int, float] = {}
    needle = f" {dbname} "
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        cmd = command(pid)
        if cmd.startswith("postgres: ") and needle in cmd + " ":
            out[pid] = cpu_seconds(pid)
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(p, 0.0) for p, v in after.items())
