"""Results as markdown (ratio ours/peer per row), JSON and a PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

LABELS = {
    "ours-sqlite": "ours (SQLite)",
    "ours-pg": "ours (PostgreSQL)",
    "peer": "peer (oidc-provider, in-memory)",
    "ours-pg-scale": "ours (PostgreSQL)",
}
METRICS = [
    ("rps", "ops/s", "higher"),
    ("p50_ms", "p50 ms", "lower"),
    ("p99_ms", "p99 ms", "lower"),
    ("cpu_ms_per_op", "server CPU ms/op", "lower"),
    ("db_cpu_ms_per_op", "+ PostgreSQL CPU ms/op", "lower"),
]
MiB = 2**20


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def _peer_label(results: dict[str, Any], workers: int) -> str:
    return "peer (in-memory)" if workers == 1 else "peer (cluster, Redis)"


def matrix_table(results: dict[str, Any], mx: dict[str, Any]) -> list[str]:
    labels = [lbl for lbl in ("ours-sqlite", "ours-pg", "peer") if lbl in mx["servers"]]
    ours = [lbl for lbl in labels if lbl != "peer"]
    has_peer = "peer" in labels
    head = ["Scenario", "Metric"] + [
        _peer_label(results, mx["workers"]) if lbl == "peer" else LABELS[lbl] for lbl in labels
    ]
    if has_peer:
        head += [f"{'SQLite' if o == 'ours-sqlite' else 'PG'}/peer" for o in ours]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    skipped: list[str] = []
    for sc, per in mx["medians"].items():
        title = results["scenarios"].get(sc, sc)
        for i, (key, name, _) in enumerate(METRICS):
            vals = {
                lbl: (per[lbl].get(key) if per[lbl].get("status") == "ok" else None)
                for lbl in labels
            }
            if key == "db_cpu_ms_per_op":
                if all(not v or v < 0.005 for v in vals.values()):
                    continue  # no database work seen (discovery, JWKS) or none measurable
                if has_peer:  # the peer has no database: compare our total with its CPU
                    row = ["", name] + [
                        _fmt(vals[lbl]) if vals[lbl] is not None else "" for lbl in labels
                    ]
                    out.append("| " + " | ".join(row + [""] * len(ours)) + " |")
                    continue
            row = [title if i == 0 else "", name] + [
                _fmt(vals[lbl]) if vals[lbl] is not None else ("n/a" if i == 0 else "")
                for lbl in labels
            ]
            if has_peer:
                row += [_ratio(vals[o], vals["peer"]) for o in ours]
            out.append("| " + " | ".join(row) + " |")
        for lbl in labels:
            if per[lbl].get("status") != "ok":
                skipped.append(
                    f"- {sc}, {LABELS[lbl]}: {per[lbl].get('status')}: {per[lbl].get('note', '')}"
                )
            elif per[lbl].get("note"):
                skipped.append(f"- {sc}, {LABELS[lbl]}: note: {per[lbl]['note']}")
    srv = mx["servers"]
    for key, name, scale in (
        ("ready_s", "start to ready, s", 1),
        ("rss_idle_per_worker", "RSS idle, MiB/worker", MiB),
        ("rss_after_per_worker", "RSS after load, MiB/worker", MiB),
        ("rss_after_total", "RSS after load, MiB, all processes", MiB),
    ):
        vals = {
            lbl: (srv[lbl].get(key) / scale if srv[lbl].get(key) is not None else None)
            for lbl in labels
        }
        row = ["Server" if key == "ready_s" else "", name] + [_fmt(vals[lbl]) for lbl in labels]
        if has_peer:
            row += [_ratio(vals[o], vals["peer"]) for o in ours]
        out.append("| " + " | ".join(row) + " |")
    if skipped:
        out += ["", "Not measured or worth knowing:", *skipped]
    return out


def targets_table(results: dict[str, Any]) -> list[str]:
    """The issue's targets, judged on the 1-worker run (per core) and the scale run."""
    one = next((mx for mx in results.get("matrix", []) if mx["workers"] == 1), None)
    rows: list[tuple[str, str, str]] = []
    if one is None:
        return []
    med = one["medians"]

    def val(sc: str, lbl: str, key: str) -> float | None:
        m = med.get(sc, {}).get(lbl, {})
        return m.get(key) if m.get("status") == "ok" else None

    for sc in ("client_credentials", "discovery", "jwks", "introspection"):
        for lbl in ("ours-sqlite", "ours-pg"):
            a, b = val(sc, lbl, "rps"), val(sc, "peer", "rps")
            if lbl not in one["servers"]:
                continue
            verdict = "not measured" if not a or not b else ("met" if a >= b else "not met")
            rows.append((f"{sc} ≥ 1.0x peer ({LABELS[lbl]})", _ratio(a, b), verdict))
    rt = val("refresh_token", "ours-pg", "rps")
    rows.append(
        (
            "refresh_token on PostgreSQL ≥ 1,000/s per core",
            _fmt(rt) + "/s" if rt else "-",
            "not measured" if rt is None else ("met" if rt >= 1000 else "not met"),
        )
    )
    a2 = results["environment"].get("argon2_verify_cpu_s", {})
    t_py, t_node = a2.get("python_argon2_cffi"), a2.get("node_argon2")
    for lbl in ("ours-sqlite", "ours-pg"):
        if lbl not in one["servers"]:
            continue
        ours_cpu, peer_cpu = (
            val("signin", lbl, "cpu_ms_per_op"),
            val("signin", "peer", "cpu_ms_per_op"),
        )
        if ours_cpu and peer_cpu and t_py and t_node:
            a, b = ours_cpu - 1000 * t_py, peer_cpu - 1000 * t_node
            rows.append(
                (
                    f"sign-in CPU/flow less one argon2id ≤ peer's ({LABELS[lbl]})",
                    f"{a:.1f} ms vs {b:.1f} ms",
                    "met" if a <= b else "not met",
                )
            )
        else:
            rows.append(
                (
                    f"sign-in CPU/flow less one argon2id ≤ peer's ({LABELS[lbl]})",
                    "-",
                    "not measured",
                )
            )
        fl = val("signin", lbl, "rps")
        if fl and t_py:
            bound = 1 / t_py
            rows.append(
                (
                    f"sign-in flows/s ≥ 90% of the argon2id bound ({LABELS[lbl]}, 1 core)",
                    f"{fl:.1f}/s of {bound:.1f}/s = {fl / bound:.0%}",
                    "met" if fl >= 0.9 * bound else "not met",
                )
            )
        else:
            rows.append(
                (
                    f"sign-in flows/s ≥ 90% of the argon2id bound ({LABELS[lbl]})",
                    "-",
                    "not measured",
                )
            )
    for mx in results.get("matrix", []):
        srv = mx["servers"]
        for lbl in ("ours-sqlite", "ours-pg"):
            if lbl not in srv or "peer" not in srv:
                continue
            a, b = srv[lbl].get("rss_after_per_worker"), srv["peer"].get("rss_after_per_worker")
            if a and b:
                rows.append(
                    (
                        f"RSS/worker after load ≤ peer's ({LABELS[lbl]}, "
                        f"{mx['workers']} worker(s))",
                        f"{a / MiB:.0f} vs {b / MiB:.0f} MiB",
                        "met" if a <= b else "not met",
                    )
                )
            r = srv[lbl].get("ready_s")
            if r is not None:
                rows.append(
                    (
                        f"ready within 1.5 s ({LABELS[lbl]}, {mx['workers']} worker(s))",
                        f"{r:.2f} s",
                        "met" if r <= 1.5 else "not met",
                    )
                )
    scale = results.get("scale", {}).get("sizes", {})
    if len(scale) >= 2:
        small, large = sorted(scale, key=int)[0], sorted(scale, key=int)[-1]
        for sc in ("signin", "client_credentials", "refresh_token", "authorization_code"):
            ms = scale[small]["medians"].get(sc, {}).get("ours-pg-scale", {})
            ml = scale[large]["medians"].get(sc, {}).get("ours-pg-scale", {})
            if ms.get("status") == "ok" and ml.get("status") == "ok":
                r = ml["p50_ms"] / ms["p50_ms"]
                rows.append(
                    (
                        f"{int(large):,} accounts: {sc} p50 within 10% of {int(small):,}",
                        f"{ml['p50_ms']:.2f} vs {ms['p50_ms']:.2f} ms ({r:.2f}x)",
                        "met" if r <= 1.10 else "not met",
                    )
                )
            else:
                rows.append((f"{int(large):,} accounts: {sc} p50 within 10%", "-", "not measured"))
    out = ["| Target | Measured | Verdict |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out


def scale_table(results: dict[str, Any]) -> list[str]:
    scale = results.get("scale", {}).get("sizes", {})
    if not scale:
        return []
    sizes = sorted(scale, key=int)
    head = ["Scenario", "Metric"] + [f"{int(s):,} accounts" for s in sizes]
    if len(sizes) >= 2:
        head.append(f"{int(sizes[-1]):,}/{int(sizes[0]):,}")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    scenarios = list(scale[sizes[0]]["medians"])
    for sc in scenarios:
        for i, (key, name, _) in enumerate(METRICS):
            vals = []
            for s in sizes:
                m = scale[s]["medians"][sc].get("ours-pg-scale", {})
                vals.append(m.get(key) if m.get("status") == "ok" else None)
            if key == "db_cpu_ms_per_op" and all(not v or v < 0.005 for v in vals):
                continue
            row = [results["scenarios"].get(sc, sc) if i == 0 else "", name] + [
                _fmt(v) for v in vals
            ]
            if len(sizes) >= 2:
                row.append(_ratio(vals[-1], vals[0]))
            out.append("| " + " | ".join(row) + " |")
    seeds = ", ".join(f"{int(s):,}: {scale[s]['seed_seconds']:.1f} s" for s in sizes)
    out += ["", f"Seeding time (COPY, accounts added at each size): {seeds}."]
    return out


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    plan = results["plan"]
    a2 = env.get("argon2_verify_cpu_s", {})
    kind = "quick (harness check)" if plan["quick"] else "full"
    start = tuple(round(x, 2) for x in env.get("loadavg_start", ()))
    end = tuple(round(x, 2) for x in env.get("loadavg_end", ())) if env.get("loadavg_end") else "-"
    py_hash = _fmt(1000 * a2.get("python_argon2_cffi", float("nan")))
    node_hash = _fmt(1000 * a2.get("node_argon2", float("nan")))
    lines = [
        "# Benchmark: our provider side by side with oidc-provider",
        "",
        f"Run {env.get('when')} at commit {env.get('git')}, {kind} run, "
        f"{plan['rounds']} alternating rounds, medians. "
        f"{env.get('cores')} cores ({env.get('cpu')}); "
        f"Python {env.get('python')}, uvicorn {env.get('uvicorn', '?')}, "
        f"Authlib {env.get('authlib', '?')}; "
        f"node {env.get('node')}, oidc-provider {env.get('oidc_provider')}; {env.get('wrk')}.",
        f"Load average at start {start}, at end {end} (anything well above 0 means other work "
        "shared the cores: treat the figures as noisy).",
        f"One argon2id verification (m=19456, t=2, p=1) costs {py_hash} ms CPU "
        f"in Python (argon2-cffi) and {node_hash} ms in node (argon2).",
        "",
        "Ratios are ours/peer: above 1 is better for ops/s, below 1 is better for latency, "
        "CPU and memory.",
        "The peer keeps everything in memory (one process) or in Redis (cluster of workers); "
        "ours keeps",
        "codes, grants, refresh tokens, sessions and login transactions in its database.",
    ]
    for mx in results.get("matrix", []):
        w = mx["workers"]
        pin = "server pinned to core 0, load generator to core 1" if w == 1 else "no pinning"
        ld = mx["load"]
        lines += [
            "",
            f"## {w} worker{'s' if w > 1 else ''} ({pin}; wrk {ld['threads']} thread(s), "
            f"{ld['connections']} connections; {ld['browsers']} concurrent sign-in browsers)",
            "",
        ]
        lines += matrix_table(results, mx)
    sc = scale_table(results)
    if sc:
        lines += ["", "## Scale: ours on PostgreSQL with more accounts (1 worker, pinned)", "", *sc]
    tt = targets_table(results)
    if tt:
        lines += ["", "## Targets of issue 5", "", *tt]
    notes = {k: v for k, v in results.get("notes", {}).items() if v}
    if notes:
        lines += ["", "## Notes", ""] + [
            f"- {LABELS.get(k, k)}: {'; '.join(v)}" for k, v in notes.items()
        ]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    mxs = results.get("matrix", [])
    if not mxs:
        return
    fig, axes = plt.subplots(1, len(mxs), figsize=(7 * len(mxs), 5), squeeze=False)
    colours = {"ours-sqlite": "#005eb8", "ours-pg": "#41b6e6", "peer": "#ed8b00"}
    for ax, mx in zip(axes[0], mxs, strict=False):
        scenarios = list(mx["medians"])
        labels = [lbl for lbl in ("ours-sqlite", "ours-pg", "peer") if lbl in mx["servers"]]
        width = 0.8 / max(1, len(labels))
        for i, lbl in enumerate(labels):
            ys = [mx["medians"][sc][lbl].get("rps") or 0 for sc in scenarios]
            xs = [j + i * width for j in range(len(scenarios))]
            ax.bar(
                xs,
                ys,
                width,
                label=LABELS[lbl] if lbl != "peer" else _peer_label(results, mx["workers"]),
                color=colours[lbl],
            )
        ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(scenarios))])
        ax.set_xticklabels([s.replace("_", "\n") for s in scenarios], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("operations per second (log scale, median)")
        ax.set_title(f"{mx['workers']} worker(s)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        "Our provider vs oidc-provider" + (" (quick run)" if results["plan"]["quick"] else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


README_MARK = "## Latest results"


def quote_in_readme(md: str, readme: Path) -> None:
    """Replace the README's "Latest results" section with the new table."""
    text = readme.read_text()
    head, sep, _ = text.partition(README_MARK)
    if not sep:
        return
    body = md.split("\n", 1)[1].lstrip("\n").replace("\n## ", "\n### ")
    readme.write_text(
        f"{head}{README_MARK}\n\nCopied from `results/latest.md` by `run.py`.\n\n{body}"
    )


def write(results: dict[str, Any], prefix: str) -> None:
    base = Path(prefix)
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = markdown(results)
    base.with_suffix(".md").write_text(md)
    chart(results, base.with_suffix(".png"))
    readme = Path(__file__).resolve().parent / "README.md"
    if base.resolve() == (readme.parent / "results" / "latest").resolve():
        quote_in_readme(md, readme)
