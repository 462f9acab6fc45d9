"""The measured scenarios. Each probes its endpoint first: ours is being built, so a 404 is
reported as "not available yet" instead of failing the run."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from bench.common import BenchUser
from bench.flows import Driver, FlowError, UserPicker, run_flows
from bench.loadgen import basic, run_wrk
from bench.targets import Target

SCENARIOS = [
    ("discovery", "Discovery document GET"),
    ("jwks", "JWKS GET"),
    ("client_credentials", "Token: client_credentials"),
    ("introspection", "Introspection of a valid access token"),
    ("refresh_token", "Token: refresh_token with rotation (chains)"),
    ("authorization_code", "Token: authorization_code redemption"),
    ("signin", "Full sign-in flow (password + TOTP, code, ID token checked)"),
]


@dataclass
class Plan:
    """How long and how hard; `--quick` shrinks everything."""

    quick: bool
    rounds: int = 3
    duration: float = 10.0
    warmup: float = 2.0
    signin_duration: float = 15.0
    codes: int = 2000
    ready_samples: int = 3

    @classmethod
    def make(cls, quick: bool, rounds: int | None) -> Plan:
        if quick:
            p = cls(
                quick=True,
                rounds=3,
                duration=3.0,
                warmup=1.0,
                signin_duration=4.0,
                codes=300,
                ready_samples=1,
            )
        else:
            p = cls(quick=False)
        if rounds:
            p.rounds = rounds
        return p


@dataclass
class Load:
    """Load generator shape for one worker count."""

    workers: int
    server_cpus: str | None
    client_cpus: str | None
    threads: int
    connections: int
    browsers: int


#: Concurrent sign-in flows per server worker: enough to keep a worker busy while flows wait
#: on the network and the database (a flow is about eight requests).
BROWSERS_PER_WORKER = 12


def load_for(workers: int) -> Load:
    if workers == 1:
        # Server on core 0, load generator on core 1 (separate cores, as the issue asks).
        return Load(1, "0", "1", threads=1, connections=32, browsers=BROWSERS_PER_WORKER)
    return Load(
        workers, None, None, threads=2, connections=64, browsers=BROWSERS_PER_WORKER * workers
    )


@dataclass
class Measurement:
    target: str
    scenario: str
    workers: int
    round: int
    status: str  # ok | skipped | failed
    note: str = ""
    ops: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s: float = 0.0
    cpu_ms_per_op: float = 0.0
    db_cpu_ms_per_op: float | None = None
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TargetState:
    """What one running target needs across scenarios: a flow driver, signed-in browser
    sessions (for minting codes by single sign-on), an access token to introspect, and
    which scenarios it can run."""

    def __init__(self, target: Target, users: list[BenchUser], picker: UserPicker) -> None:
        self.target = target
        self.driver = Driver(target, users, picker)
        self.sessions: list[httpx.Cookies] = []
        self.access_token: str | None = None
        self.unavailable: dict[str, str] = {}

    @property
    def auth(self) -> str:
        assert self.target.client
        return basic(self.target.client.client_id, self.target.client.client_secret)


def _status_note(r: httpx.Response) -> str:
    if r.status_code in (404, 405, 501):
        return f"not available yet ({r.request.method} {r.url.path} answered {r.status_code})"
    return f"{r.request.method} {r.url.path} answered {r.status_code}: {r.text[:160]}"


def probe(state: TargetState) -> None:
    """Find out which scenarios the target can run; sign in a few browsers for SSO."""
    t = state.target
    with httpx.Client(timeout=30) as http:
        for name, what in (("discovery", "discovery"), ("jwks", "jwks")):
            r = http.get(t.url(what))
            if r.status_code != 200:
                state.unavailable[name] = _status_note(r)
        r = http.post(
            t.url("token"),
            data={"grant_type": "client_credentials"},
            headers={"Authorization": state.auth},
        )
        if r.status_code != 200 or "access_token" not in r.text:
            state.unavailable["client_credentials"] = _status_note(r)
    try:
        asyncio.run(_probe_flows(state))
    except Exception as exc:
        note = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, FlowError) and exc.status in (404, 405, 501):
            note = f"not available yet ({exc})"
        for name in ("signin", "authorization_code", "refresh_token", "introspection"):
            state.unavailable.setdefault(name, f"sign-in flow: {note}"[:300])
        return
    with httpx.Client(timeout=30) as http:
        r = http.post(
            t.url("introspection"),
            data={"token": state.access_token},
            headers={"Authorization": state.auth},
        )
        if r.status_code != 200 or r.json().get("active") is not True:
            state.unavailable["introspection"] = _status_note(r)


async def _probe_flows(state: TargetState) -> None:
    d = state.driver
    await d.load_keys()
    for _ in range(4):
        res = await d.sign_in()
        state.sessions.append(res.cookies)
        state.access_token = res.token["access_token"]
    bodies = await d.mint_codes(state.sessions, 2)
    tokens = await d.redeem_bodies(bodies)
    if not all("refresh_token" in tok for tok in tokens):
        state.unavailable["refresh_token"] = "no refresh_token issued for offline_access"


# ---------------------------------------------------------------------------- measuring
def measure(state: TargetState, scenario: str, load: Load, plan: Plan, rnd: int) -> Measurement:
    t = state.target
    m = Measurement(target=t.label, scenario=scenario, workers=load.workers, round=rnd, status="ok")
    if scenario in state.unavailable:
        m.status, m.note = "skipped", state.unavailable[scenario]
        return m
    try:
        waited = settle(state)
        if scenario == "signin":
            _measure_signin(state, load, plan, m)
        else:
            _measure_wrk(state, scenario, load, plan, m)
    except Exception as exc:
        m.status, m.note = "failed", f"{type(exc).__name__}: {exc}"[:300]
        return m
    m.extra["settle_s"] = round(waited, 2)
    if waited > 2:
        note = f"waited {waited:.0f} s for the previous run's requests to drain"
        m.note = f"{m.note}; {note}" if m.note else note
    return m


def _wrk_args(state: TargetState, scenario: str, plan: Plan, load: Load) -> dict[str, Any]:
    t = state.target
    if scenario == "discovery":
        return {"url": t.url("discovery")}
    if scenario == "jwks":
        return {"url": t.url("jwks")}
    if scenario == "client_credentials":
        return {
            "url": t.url("token"),
            "method": "POST",
            "body": "grant_type=client_credentials",
            "auth": state.auth,
        }
    if scenario == "introspection":
        return {
            "url": t.url("introspection"),
            "method": "POST",
            "body": f"token={state.access_token}&token_type_hint=access_token",
            "auth": state.auth,
        }
    if scenario == "authorization_code":
        # Codes live at most 60 s: mint for at most 20 s, then redeem them all.
        bodies = asyncio.run(state.driver.mint_codes(state.sessions, plan.codes, max_seconds=20))
        return {
            "url": t.url("token"),
            "queue": bodies,
            "mode": "code",
            "path": t.path("token"),
            "auth": state.auth,
        }
    if scenario == "refresh_token":
        chains = load.connections + load.threads * 2

        async def mint() -> list[str]:
            bodies = await state.driver.mint_codes(state.sessions, chains)
            tokens = await state.driver.redeem_bodies(bodies)
            return [
                f"grant_type=refresh_token&refresh_token={tok['refresh_token']}" for tok in tokens
            ]

        return {
            "url": t.url("token"),
            "queue": asyncio.run(mint()),
            "mode": "refresh",
            "path": t.path("token"),
            "auth": state.auth,
        }
    raise ValueError(scenario)


def _measure_wrk(state: TargetState, scenario: str, load: Load, plan: Plan, m: Measurement) -> None:
    args = _wrk_args(state, scenario, plan, load)
    state.target.analyze()
    db_before = state.target.db_cpu()
    before = state.target.sample()
    r = run_wrk(
        duration=plan.duration if scenario != "authorization_code" else plan.duration * 6,
        threads=load.threads,
        connections=load.connections,
        cpus=load.client_cpus,
        **args,
    )
    after = state.target.sample()
    _db_cpu(state, db_before, r.ok, m)
    m.ops, m.seconds, m.rps = r.ok, r.seconds, r.rps
    m.p50_ms, m.p99_ms, m.errors = r.p50_ms, r.p99_ms, r.errors
    m.cpu_s = after.cpu_since(before)
    m.cpu_ms_per_op = 1000 * m.cpu_s / r.ok if r.ok else 0.0
    m.extra = {"requests": r.requests}
    if r.ok == 0:
        m.status, m.note = "failed", f"no successful request ({r.errors} errors)"
    elif r.errors > max(5, r.requests // 100):
        m.note = f"{r.errors} failed requests of {r.requests}"


def _db_cpu(state: TargetState, before: dict[int, float], ops: int, m: Measurement) -> None:
    if state.target.pg_dbname and ops:
        from bench.procstat import cpu_delta

        m.db_cpu_ms_per_op = 1000 * cpu_delta(before, state.target.db_cpu()) / ops


def _measure_signin(state: TargetState, load: Load, plan: Plan, m: Measurement) -> None:
    state.target.analyze()
    db_before = state.target.db_cpu()
    before = state.target.sample()
    run = asyncio.run(
        run_flows(state.driver, concurrency=load.browsers, duration=plan.signin_duration)
    )
    after = state.target.sample()
    _db_cpu(state, db_before, run.flows, m)
    m.ops, m.seconds = run.flows, run.seconds
    m.rps = run.flows / run.seconds
    if run.latencies:
        q = (
            statistics.quantiles(run.latencies, n=100, method="inclusive")
            if len(run.latencies) > 1
            else [run.latencies[0]] * 99
        )
        m.p50_ms, m.p99_ms = 1000 * statistics.median(run.latencies), 1000 * q[98]
    m.cpu_s = after.cpu_since(before)
    m.cpu_ms_per_op = 1000 * m.cpu_s / run.flows if run.flows else 0.0
    m.errors = run.failures
    m.extra = {"errors": run.errors, "pool_waits": run.waits}
    if run.flows == 0:
        m.status, m.note = "failed", "; ".join(run.errors)[:300]
    elif run.failures:
        m.note = f"{run.failures} failed flows: {run.errors[0][:120]}"
    if run.waits:
        m.note = (m.note + "; " if m.note else "") + "user pool ran out within a TOTP step"


def warm(state: TargetState, scenario: str, load: Load, plan: Plan) -> None:
    """A short unmeasured run so that caches, JITs and pools are warm."""
    if scenario in state.unavailable or scenario in ("authorization_code", "refresh_token"):
        return
    if scenario == "signin":
        asyncio.run(run_flows(state.driver, concurrency=load.browsers, duration=plan.warmup))
        return
    args = _wrk_args(state, scenario, plan, load)
    run_wrk(
        duration=plan.warmup,
        threads=load.threads,
        connections=load.connections,
        cpus=load.client_cpus,
        **args,
    )


def settle(state: TargetState, limit: float = 45.0) -> float:
    """Wait until the target answers a database-backed request promptly again: requests
    of the previous run may still be queued in the server (on SQLite, waiting for the write
    lock) after wrk has hung up, and must not slow the next measurement. Returns the wait."""
    t = state.target
    started = time.perf_counter()
    with httpx.Client(timeout=limit) as http:
        while time.perf_counter() - started < limit:
            t0 = time.perf_counter()
            try:
                if "client_credentials" not in state.unavailable:
                    http.post(
                        t.url("token"),
                        data={"grant_type": "client_credentials"},
                        headers={"Authorization": state.auth},
                    )
                else:
                    http.get(t.url("discovery"))
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 < 0.5:
                break
    time.sleep(0.2)
    return time.perf_counter() - started
