"""Load test for a running gofly server: many visitor sockets, a few agent sockets, timed traffic.

Run from the repository root against a server you started yourself (see docs/performance.md):

    .venv/bin/python -m bench.loadtest --url http://127.0.0.1:8790 --site SITE_KEY \\
        --agent-cookie SESSION_KEY --server-pid PID --visitors 2000 --rate 100 --duration 30

What it does, in order, every step bounded by a count and by the `--max-seconds` deadline:

1. reads the server's RSS (VmRSS of `--server-pid` plus its child processes);
2. opens `--agents` agent sockets (session cookie + Origin) and waits for their `ready`;
3. opens `--visitors` visitor sockets, `--connect-concurrency` at a time: each asks
   `POST /api/widget/v1/sessions` for a token (a tiny keep-alive HTTP/1.1 client on
   asyncio streams, one connection per connect worker), opens the returned `ws_url` and waits
   for `ready`; reads the server's RSS again;
4. for `--duration` seconds sends `--rate` messages a second in total, spread evenly over time
   and round-robin over `--senders` of the visitor sockets; every other visitor socket sends a
   `ping` every `--ping-interval` seconds, like an idle widget;
5. waits up to `--drain-seconds` for the outstanding acks and forwards, reads RSS once more,
   closes every socket and prints one JSON object on stdout (progress goes to stderr).

Latencies are measured in this process with `time.perf_counter_ns()`: ack latency from just
before `send()` of a visitor's message to the `ack` frame with its client_id on that socket;
forward latency from the same instant to the `message` frame with that client_id on an agent
socket. Agents never reply, so every conversation stays unassigned and every agent socket
receives every message: `forward_latency_ms` is measured on the first agent socket,
`forward_latency_all_agents_ms` pools every agent socket. Acks and forwards are counted until
the drain ends; what arrives later, while the sockets close, is left out.

The load generator shares the machine with the server, so its own CPU use is reported next to
every figure. `run_scenario()` runs one scenario against one URL and returns the result dict,
so a side-by-side baseline run can be added around it.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import itertools
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

NS = 1_000_000_000
MS = 1_000_000
SERVER_MESSAGE_RATE_PER_SOCKET = 5.0  # messages.rate_per_second default, docs/protocol.md


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def log(text: str) -> None:
    print(f"[loadtest {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentiles(values_ns: list[int]) -> dict[str, Any]:
    """count, p50/p95/p99/max (nearest rank) and mean of nanosecond samples, in milliseconds."""
    if not values_ns:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    data = sorted(values_ns)
    n = len(data)

    def rank(p: float) -> float:
        index = max(0, min(n - 1, int(-(-p * n // 100)) - 1))  # ceil(p*n/100) - 1
        return round(data[index] / MS, 3)

    return {
        "count": n,
        "p50": rank(50),
        "p95": rank(95),
        "p99": rank(99),
        "max": round(data[-1] / MS, 3),
        "mean": round(sum(data) / n / MS, 3),
    }


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("latin-1")
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return stat[stat.rfind(")") + 2 :].split()


def _proc_children(pid: int) -> list[int]:
    """Every descendant of `pid` (scans /proc; bounded by the number of processes)."""
    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _proc_stat(int(entry))
        if fields is None:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    for _ in range(100_000):
        if not todo:
            break
        current = todo.pop()
        for child in parents.get(current, []):
            found.append(child)
            todo.append(child)
    return found


def server_rss_kib(pid: int | None) -> int | None:
    """VmRSS of `pid` plus every descendant, in KiB; None without a pid or if it is gone."""
    if not pid:
        return None
    total = 0
    seen = False
    for one in [pid, *_proc_children(pid)]:
        try:
            with open(f"/proc/{one}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        seen = True
                        break
        except OSError:
            continue
    return total if seen else None


def server_cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of `pid` plus its live descendants, in seconds."""
    if not pid:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    seen = False
    for one in [pid, *_proc_children(pid)]:
        fields = _proc_stat(one)
        if fields is None:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        seen = True
    return total / ticks if seen else None


# ---------------------------------------------------------------------------------------------
# A minimal keep-alive HTTP/1.1 client (no new dependency)
# ---------------------------------------------------------------------------------------------


class HttpError(Exception):
    pass


class HttpClient:
    """One keep-alive connection, requests one after another. Reconnects when the server closes."""

    MAX_HEADER = 64 * 1024
    MAX_BODY = 1024 * 1024

    def __init__(self, host: str, port: int, local_addr: str | None, timeout: float) -> None:
        self.host = host
        self.port = port
        self.local_addr = local_addr
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host,
            self.port,
            limit=self.MAX_HEADER,
            local_addr=(self.local_addr, 0) if self.local_addr else None,
        )

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (TimeoutError, OSError):
                pass

    async def post_json(self, path: str, payload: dict) -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json\r\n"
            f"User-Agent: gofly-bench\r\nContent-Length: {len(body)}\r\n"
            f"Connection: keep-alive\r\n\r\n"
        ).encode()
        # A kept-alive connection may have been closed by the server meanwhile: one retry on a
        # fresh connection, never more.
        for attempt in range(2):
            reused = self.writer is not None
            try:
                if self.writer is None:
                    await self._open()
                return await asyncio.wait_for(self._exchange(head + body), self.timeout)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                await self.close()
                if attempt or not reused:
                    raise HttpError(f"connection: {type(exc).__name__}") from exc
            except BaseException:
                await self.close()
                raise
        raise HttpError("unreachable")

    async def _exchange(self, request: bytes) -> tuple[int, Any]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            raw = await self.reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            for _ in range(10_000):
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            raw = b"".join(parts)
        else:
            raw = await self.reader.read(self.MAX_BODY)
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            await self.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw[:200].decode("utf-8", "replace")
        return status, data


# ---------------------------------------------------------------------------------------------
# Scenario and result bookkeeping
# ---------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    url: str = "http://127.0.0.1:8000"
    site: str = ""
    visitors: int = 2000
    agents: int = 5
    senders: int = 200
    rate: float = 100.0
    duration: float = 30.0
    connect_concurrency: int = 50
    server_pid: int | None = None
    agent_cookie: str | None = None
    cookie_name: str = "sessionid"
    origin: str | None = None
    source_addresses: list[str] = field(default_factory=list)
    max_seconds: float = 600.0
    drain_seconds: float = 10.0
    ping_interval: float = 30.0
    connect_timeout: float = 15.0
    compression: str = "deflate"
    label: str = ""


class Socket:
    __slots__ = ("index", "ws", "reader", "kind", "sender")

    def __init__(self, index: int, ws: ClientConnection, kind: str) -> None:
        self.index = index
        self.ws = ws
        self.kind = kind
        self.reader: asyncio.Task | None = None
        self.sender = False


class Run:
    """Everything one scenario measures; shared by the tasks of that scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.run_id = f"{os.getpid():x}{random.getrandbits(24):06x}"
        self.errors: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()
        self.closing = False
        # Acks and forwards count only until the drain ends, so late arrivals while the
        # sockets close do not enter the figures.
        self.measuring = True
        self.visitors: list[Socket] = []
        self.agents: list[Socket] = []
        # Connect phase.
        self.connect_ns: list[int] = []
        self.session_ns: list[int] = []
        self.handshake_ns: list[int] = []
        self.agent_connect_ns: list[int] = []
        self.compressed_sockets = 0
        # Messages.
        self.sent_at: dict[str, int] = {}
        self.sent = 0
        self.acked: set[str] = set()
        self.ack_ns: list[int] = []
        self.duplicate_acks = 0
        self.forwarded_first: set[str] = set()
        self.forward_first_ns: list[int] = []
        self.forward_all_ns: list[int] = []
        self.forward_counts: list[int] = []
        self.duplicate_forwards = 0
        self.send_lag_ns: list[int] = []
        self.pings_sent = 0

    # Readers -----------------------------------------------------------------------------------

    async def _read(self, sock: Socket, role: str, handle: Any) -> None:
        """Feed `handle(frame, kind, now_ns)` every measured frame until the socket closes.

        Counts frames by type and bad frames; a reader never takes the run down.
        """
        ws = sock.ws
        try:
            async for raw in ws:
                now = time.perf_counter_ns()
                try:
                    frame = json.loads(raw)
                    kind = frame.get("type")
                except (ValueError, AttributeError):
                    self.errors[f"{role}_bad_frame"] += 1
                    continue
                self.frames[f"{role}:{kind}"] += 1
                if kind in ("ack", "message") and not self.measuring:
                    continue
                if kind == "error":
                    self.errors[f"{role}_error_frame:{frame.get('code')}"] += 1
                handle(frame, kind, now)
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.errors[f"{role}_reader:{type(exc).__name__}"] += 1
        if not self.closing:
            self.errors[f"{role}_closed:{_close_code(ws)}"] += 1

    async def visitor_reader(self, sock: Socket) -> None:
        def handle(frame: dict, kind: str, now: int) -> None:
            if kind == "ack":
                cid = frame.get("client_id")
                sent = self.sent_at.get(cid)
                if sent is None:
                    self.errors["ack_unknown_client_id"] += 1
                elif cid in self.acked:
                    self.duplicate_acks += 1
                else:
                    self.acked.add(cid)
                    self.ack_ns.append(now - sent)
            elif kind == "error" and self.errors[f"visitor_error_frame:{frame.get('code')}"] <= 3:
                log(f"visitor {sock.index} error frame: {frame}")

        await self._read(sock, "visitor", handle)

    async def agent_reader(self, sock: Socket, position: int) -> None:
        seen: set[str] = set()

        def handle(frame: dict, kind: str, now: int) -> None:
            if kind != "message":
                return
            cid = frame.get("client_id")
            sent = self.sent_at.get(cid)
            if sent is None:
                return  # not ours (another client of the same site)
            if cid in seen:
                self.duplicate_forwards += 1
                return
            seen.add(cid)
            self.forward_counts[position] += 1
            self.forward_all_ns.append(now - sent)
            if position == 0:
                self.forwarded_first.add(cid)
                self.forward_first_ns.append(now - sent)

        await self._read(sock, "agent", handle)


def _close_code(ws: ClientConnection) -> str:
    rcvd = getattr(ws, "close_rcvd", None)
    if rcvd is not None:
        return str(rcvd.code)
    return "no_close_frame"


def _classify(prefix: str, exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"{prefix}_http_{exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else "no_close_frame"
        return f"{prefix}_closed:{code}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"{prefix}_timeout"
    if isinstance(exc, OSError) and exc.errno:
        return f"{prefix}_oserror:{errno.errorcode.get(exc.errno, exc.errno)}"
    return f"{prefix}:{type(exc).__name__}"


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------


async def _open_socket(run: Run, uri: str, source: str | None, **kwargs: Any) -> ClientConnection:
    s = run.s
    extra: dict[str, Any] = {}
    if source:
        extra["local_addr"] = (source, 0)
    return await connect(
        uri,
        compression=None if s.compression == "none" else "deflate",
        open_timeout=s.connect_timeout,
        ping_interval=None,  # the widget pings at application level; the server pings too
        ping_timeout=None,
        close_timeout=2,
        max_queue=256,
        proxy=None,
        user_agent_header="gofly-bench websockets/" + websockets.__version__,
        **kwargs,
        **extra,
    )


async def _await_ready(ws: ClientConnection, timeout: float) -> dict:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    frame = json.loads(raw)
    if not isinstance(frame, dict) or frame.get("type") != "ready":
        raise ValueError(f"expected ready, got {str(raw)[:120]}")
    return frame


def _uses_compression(ws: ClientConnection) -> bool:
    try:
        return bool(ws.protocol.extensions)
    except AttributeError:
        return False


async def connect_agents(run: Run, deadline: float) -> None:
    s = run.s
    if s.agents <= 0:
        return
    parts = urlsplit(s.url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    uri = f"{scheme}://{parts.netloc}/ws/agent/"
    origin = s.origin or f"{parts.scheme}://{parts.netloc}"
    headers = {"Cookie": f"{s.cookie_name}={s.agent_cookie}"} if s.agent_cookie else {}
    for i in range(s.agents):
        if time.monotonic() > deadline:
            run.errors["agent_not_connected_deadline"] += s.agents - i
            break
        source = s.source_addresses[i % len(s.source_addresses)] if s.source_addresses else None
        t0 = time.perf_counter_ns()
        ws = None
        try:
            ws = await _open_socket(run, uri, source, origin=origin, additional_headers=headers)
            await _await_ready(ws, s.connect_timeout)
        except Exception as exc:
            kind = _classify("agent_connect", exc)
            run.errors[kind] += 1
            log(f"agent {i} failed: {kind} {exc!r}")
            if ws is not None:
                await _abort(ws)
            continue
        run.agent_connect_ns.append(time.perf_counter_ns() - t0)
        sock = Socket(i, ws, "agent")
        run.forward_counts.append(0)
        sock.reader = asyncio.create_task(run.agent_reader(sock, len(run.agents)))
        run.agents.append(sock)


async def connect_visitors(run: Run, deadline: float) -> float:
    """Open the visitor sockets; returns the wall time the phase took."""
    s = run.s
    parts = urlsplit(s.url)
    if parts.scheme == "https":
        raise SystemExit("https is not supported by the bench HTTP client; use the plain port")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    counter = itertools.count()
    sources = s.source_addresses or [None]
    started = time.perf_counter()

    async def worker(wid: int) -> None:
        http = HttpClient(host, port, sources[wid % len(sources)], s.connect_timeout)
        try:
            for _ in range(s.visitors):  # bounded; the shared counter ends it sooner
                i = next(counter)
                if i >= s.visitors:
                    return
                if time.monotonic() > deadline:
                    run.errors["visitor_not_connected_deadline"] += 1
                    continue
                await connect_one(i, http, sources[i % len(sources)])
        finally:
            await http.close()

    async def connect_one(i: int, http: HttpClient, source: str | None) -> None:
        t0 = time.perf_counter_ns()
        try:
            status, data = await http.post_json("/api/widget/v1/sessions", {"site": s.site})
        except Exception as exc:
            run.errors[_classify("session", exc)] += 1
            return
        t1 = time.perf_counter_ns()
        if status != 201 or not isinstance(data, dict) or "ws_url" not in data:
            code = data.get("code") if isinstance(data, dict) else None
            run.errors[f"session_http_{status}" + (f":{code}" if code else "")] += 1
            if sum(v for k, v in run.errors.items() if k.startswith("session_http")) <= 3:
                log(f"session refused: {status} {data}")
            return
        ws = None
        try:
            ws = await _open_socket(run, data["ws_url"], source)
            t2 = time.perf_counter_ns()
            await _await_ready(ws, s.connect_timeout)
        except Exception as exc:
            run.errors[_classify("visitor_connect", exc)] += 1
            if ws is not None:
                await _abort(ws)
            return
        t3 = time.perf_counter_ns()
        run.session_ns.append(t1 - t0)
        run.handshake_ns.append(t2 - t1)
        run.connect_ns.append(t3 - t0)
        if _uses_compression(ws):
            run.compressed_sockets += 1
        sock = Socket(i, ws, "visitor")
        sock.reader = asyncio.create_task(run.visitor_reader(sock))
        run.visitors.append(sock)

    workers = [asyncio.create_task(worker(w)) for w in range(max(1, s.connect_concurrency))]
    await asyncio.gather(*workers)
    return time.perf_counter() - started


def choose_senders(run: Run) -> list[Socket]:
    count = min(run.s.senders, len(run.visitors))
    if count <= 0:
        return []
    step = len(run.visitors) / count
    chosen = [run.visitors[int(k * step)] for k in range(count)]
    for sock in chosen:
        sock.sender = True
    return chosen


async def pinger(run: Run, stop: asyncio.Event, deadline: float) -> None:
    """Every idle visitor socket sends {"type":"ping"} once per interval, evenly staggered."""
    idle = [v for v in run.visitors if not v.sender]
    if not idle or run.s.ping_interval <= 0:
        return
    frame = json.dumps({"type": "ping"})
    interval = run.s.ping_interval
    gap = interval / len(idle)
    start = time.monotonic() + random.uniform(0, gap)
    max_pings = int((deadline - time.monotonic()) / gap) + len(idle) + 1
    for k in range(max_pings):
        if stop.is_set() or time.monotonic() > deadline:
            return
        delay = start + k * gap - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return
            except TimeoutError:
                pass
        sock = idle[k % len(idle)]
        try:
            await sock.ws.send(frame)
            run.pings_sent += 1
        except ConnectionClosed:
            run.errors["ping_on_closed_socket"] += 1
        except Exception as exc:
            run.errors[f"ping:{type(exc).__name__}"] += 1


async def send_messages(run: Run, senders: list[Socket], deadline: float) -> float:
    """Send rate*duration messages evenly over time; returns the wall time it took."""
    s = run.s
    total = int(s.rate * s.duration)
    if not senders or total <= 0:
        return 0.0
    interval_ns = NS / s.rate
    start = time.perf_counter_ns() + 10 * MS
    for k in range(total):
        target = start + int(k * interval_ns)
        delay = target - time.perf_counter_ns()
        if delay > 0:
            await asyncio.sleep(delay / NS)
        if time.monotonic() > deadline:
            run.errors["send_stopped_at_deadline"] += total - k
            break
        sock = senders[k % len(senders)]
        cid = f"{run.run_id}-{k}"
        now = time.perf_counter_ns()
        run.send_lag_ns.append(max(0, now - target))
        frame = json.dumps({"type": "message", "client_id": cid, "body": f"bench {k} {now}"})
        run.sent_at[cid] = now
        try:
            await sock.ws.send(frame)
            run.sent += 1
        except ConnectionClosed:
            del run.sent_at[cid]
            run.errors["send_on_closed_socket"] += 1
        except Exception as exc:
            del run.sent_at[cid]
            run.errors[f"send:{type(exc).__name__}"] += 1
    return (time.perf_counter_ns() - start) / NS


async def drain(run: Run, seconds: float, deadline: float) -> float:
    """Wait until every sent message is acked and forwarded to the first agent, or time is up."""
    started = time.monotonic()
    stop_at = min(started + seconds, deadline)
    want_forward = bool(run.agents)
    for _ in range(int(seconds / 0.05) + 2):
        done = len(run.acked) >= run.sent and (
            not want_forward or len(run.forwarded_first) >= run.sent
        )
        if done or time.monotonic() >= stop_at:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _abort(ws: ClientConnection) -> None:
    try:
        ws.transport.abort()
    except Exception:
        pass


async def close_all(run: Run, budget: float) -> None:
    run.closing = True
    socks = run.visitors + run.agents
    stop_at = time.monotonic() + budget
    for start in range(0, len(socks), 500):
        batch = socks[start : start + 500]
        remaining = stop_at - time.monotonic()
        if remaining <= 0:
            for sock in socks[start:]:
                await _abort(sock.ws)
            break
        tasks = [asyncio.create_task(sock.ws.close()) for sock in batch]
        _done, pending = await asyncio.wait(tasks, timeout=min(remaining, 5))
        for task in pending:
            task.cancel()
        for sock in batch:
            if sock.ws.state.name != "CLOSED":
                await _abort(sock.ws)
    readers = [sock.reader for sock in socks if sock.reader is not None]
    if readers:
        _done, pending = await asyncio.wait(readers, timeout=3)
        for task in pending:
            task.cancel()


async def progress(run: Run, stop: asyncio.Event, deadline: float) -> None:
    for _ in range(100_000):
        try:
            await asyncio.wait_for(stop.wait(), 5)
            return
        except TimeoutError:
            pass
        if time.monotonic() > deadline:
            return
        errors = sum(run.errors.values())
        log(
            f"visitors={len(run.visitors)} agents={len(run.agents)} sent={run.sent} "
            f"acked={len(run.acked)} forwarded={len(run.forwarded_first)} errors={errors} "
            f"rss={server_rss_kib(run.s.server_pid)}KiB"
        )


# ---------------------------------------------------------------------------------------------
# One scenario
# ---------------------------------------------------------------------------------------------


async def run_scenario(scenario: Scenario) -> dict[str, Any]:
    """Run one scenario against one URL and return the measurements as a JSON-able dict."""
    s = scenario
    run = Run(s)
    wall0 = time.perf_counter()
    cpu0 = cpu_seconds_self()
    deadline = time.monotonic() + s.max_seconds
    warnings: list[str] = []
    if s.senders > 0 and s.rate / s.senders > SERVER_MESSAGE_RATE_PER_SOCKET:
        warnings.append(
            f"{s.rate / s.senders:.2f} msg/s per sending socket exceeds the server's default "
            f"limit of {SERVER_MESSAGE_RATE_PER_SOCKET}/s: expect rate_limited errors"
        )
    if s.agents and not s.agent_cookie:
        warnings.append("no --agent-cookie: agent sockets will be refused (4401)")
    for text in warnings:
        log("warning: " + text)

    load_start = os.getloadavg()
    stop = asyncio.Event()
    progress_task = asyncio.create_task(progress(run, stop, deadline))
    rss_before = server_rss_kib(s.server_pid)
    srv_cpu0 = server_cpu_seconds(s.server_pid)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")

    log(f"connecting {s.agents} agent sockets to {s.url}")
    await connect_agents(run, deadline)
    log(f"connecting {s.visitors} visitor sockets, {s.connect_concurrency} at a time")
    connect_cpu0 = cpu_seconds_self()
    connect_seconds = await connect_visitors(run, deadline)
    connect_cpu = cpu_seconds_self() - connect_cpu0
    connected = len(run.visitors) + len(run.agents)
    log(f"connected {len(run.visitors)} visitors in {connect_seconds:.1f}s")
    # Freeze what exists now so the generator's own full collections stay short during sending.
    gc.collect()
    gc.freeze()
    await asyncio.sleep(1.0)  # let the server settle before the RSS reading
    rss_connected = server_rss_kib(s.server_pid)
    srv_cpu1 = server_cpu_seconds(s.server_pid)

    senders = choose_senders(run)
    log(f"sending {s.rate:g} msg/s for {s.duration:g}s over {len(senders)} sockets")
    ping_task = asyncio.create_task(pinger(run, stop, deadline))
    send_cpu0 = cpu_seconds_self()
    send_wall0 = time.perf_counter()
    send_seconds = await send_messages(run, senders, deadline)
    drain_seconds = await drain(run, s.drain_seconds, deadline)
    run.measuring = False
    send_wall = time.perf_counter() - send_wall0
    send_cpu = cpu_seconds_self() - send_cpu0
    srv_cpu2 = server_cpu_seconds(s.server_pid)
    rss_after = server_rss_kib(s.server_pid)
    stop.set()
    for task in (ping_task, progress_task):
        try:
            await asyncio.wait_for(task, 5)
        except (TimeoutError, asyncio.CancelledError):
            pass
    log("closing sockets")
    await close_all(run, budget=30)
    gc.unfreeze()
    cpu_total = cpu_seconds_self() - cpu0
    wall_total = time.perf_counter() - wall0

    sent = run.sent
    missing_ack = sent - len(run.acked)
    missing_fwd = sent - len(run.forwarded_first) if run.agents else None
    errors = dict(sorted(run.errors.items()))
    if missing_ack:
        errors["ack_missing_after_drain"] = missing_ack
    if missing_fwd:
        errors["forward_missing_after_drain_first_agent"] = missing_fwd

    def pct(cpu: float, wall: float) -> float | None:
        return round(100 * cpu / wall, 1) if wall > 0 else None

    def diff(a: float | None, b: float | None) -> float | None:
        return round(b - a, 2) if a is not None and b is not None else None

    growth = None
    if rss_before is not None and rss_connected is not None and connected:
        growth = round((rss_connected - rss_before) / connected, 2)
    srv_connect_cpu = diff(srv_cpu0, srv_cpu1)
    srv_send_cpu = diff(srv_cpu1, srv_cpu2)
    return {
        "label": s.label,
        "started_at": started_at,
        "scenario": {k: v for k, v in asdict(s).items() if k != "agent_cookie"},
        "warnings": warnings,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in load_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "connect": {
            "visitors_requested": s.visitors,
            "visitors_connected": len(run.visitors),
            "agents_requested": s.agents,
            "agents_connected": len(run.agents),
            "total_seconds": round(connect_seconds, 3),
            "sockets_per_second": round(len(run.visitors) / connect_seconds, 1)
            if connect_seconds
            else None,
            "per_socket_ms": percentiles(run.connect_ns),
            "session_post_ms": percentiles(run.session_ns),
            "ws_handshake_ms": percentiles(run.handshake_ns),
            "agent_per_socket_ms": percentiles(run.agent_connect_ns),
            "permessage_deflate_negotiated": run.compressed_sockets,
        },
        "messages": {
            "planned": int(s.rate * s.duration),
            "sent": sent,
            "acked": len(run.acked),
            "forwarded_first_agent": len(run.forwarded_first) if run.agents else None,
            "forwarded_per_agent": list(run.forward_counts),
            "duplicate_acks": run.duplicate_acks,
            "duplicate_forwards": run.duplicate_forwards,
            "senders": len(senders),
            "send_seconds": round(send_seconds, 3),
            "achieved_rate": round(sent / send_seconds, 1) if send_seconds else None,
            "drain_seconds": round(drain_seconds, 3),
            "counted_until": "end of drain",
            "idle_pings_sent": run.pings_sent,
            "frames_received": dict(sorted(run.frames.items())),
        },
        "ack_latency_ms": percentiles(run.ack_ns),
        "forward_latency_ms": {
            "measured_on": "first agent socket",
            **percentiles(run.forward_first_ns),
        },
        "forward_latency_all_agents_ms": {
            "measured_on": "every agent socket, pooled",
            **percentiles(run.forward_all_ns),
        },
        "send_lag_ms": percentiles(run.send_lag_ns),
        "errors": errors,
        "server": {
            "pid": s.server_pid,
            "rss_kib_before": rss_before,
            "rss_kib_after_connect": rss_connected,
            "rss_kib_after_run": rss_after,
            "rss_growth_kib_per_connection": growth,
            "cpu_seconds_connect_phase": srv_connect_cpu,
            "cpu_seconds_send_phase": srv_send_cpu,
            "cpu_percent_send_phase": pct(srv_send_cpu, send_wall)
            if srv_send_cpu is not None
            else None,
        },
        "loadgen": {
            "cpu_seconds": round(cpu_total, 2),
            "cpu_percent": pct(cpu_total, wall_total),
            "cpu_percent_connect_phase": pct(connect_cpu, connect_seconds),
            "cpu_percent_send_phase": pct(send_cpu, send_wall),
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "wall_seconds": round(wall_total, 2),
        },
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Scenario:
    p = argparse.ArgumentParser(
        description="Open many visitor and agent sockets against a running gofly server and "
        "measure connect, ack and forward latency. Prints one JSON object on stdout."
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    p.add_argument("--site", required=True, help="site key the visitors belong to")
    p.add_argument("--visitors", type=int, default=2000, help="visitor sockets (N)")
    p.add_argument("--agents", type=int, default=5, help="agent sockets (M)")
    p.add_argument(
        "--senders",
        type=int,
        default=200,
        help="how many of the visitor sockets send messages (>= rate/4 advised)",
    )
    p.add_argument("--rate", type=float, default=100.0, help="messages per second, in total")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    p.add_argument(
        "--connect-concurrency", type=int, default=50, help="visitor sockets being opened at once"
    )
    p.add_argument("--server-pid", type=int, help="PID of the server, for RSS and CPU")
    p.add_argument("--agent-cookie", help="sessionid cookie value for the agent sockets")
    p.add_argument("--cookie-name", default="sessionid")
    p.add_argument("--origin", help="Origin header of the agent sockets (default: --url)")
    p.add_argument(
        "--source-addresses",
        default="",
        help="comma list of loopback source addresses, e.g. 127.0.0.2,127.0.0.3",
    )
    p.add_argument("--max-seconds", type=float, default=600.0, help="hard cap on the whole run")
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=10.0,
        help="how long to wait for outstanding acks/forwards after sending",
    )
    p.add_argument(
        "--ping-interval",
        type=float,
        default=30.0,
        help="seconds between pings of each idle visitor socket (0: none)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=15.0,
        help="timeout of one session POST, handshake or ready",
    )
    p.add_argument(
        "--compression",
        choices=["deflate", "none"],
        default="deflate",
        help="offer permessage-deflate like a browser does (default) or not",
    )
    p.add_argument("--label", default="", help="free text copied into the JSON")
    a = p.parse_args(argv)
    for name in ("visitors", "agents", "senders", "connect_concurrency"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if a.rate <= 0 or a.duration < 0 or a.max_seconds <= 0:
        p.error("--rate and --max-seconds must be > 0, --duration >= 0")
    host = urlsplit(a.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        p.error("load tests target 127.0.0.1 only")
    sources = [x.strip() for x in a.source_addresses.split(",") if x.strip()]
    return Scenario(
        url=a.url.rstrip("/"),
        site=a.site,
        visitors=a.visitors,
        agents=a.agents,
        senders=a.senders,
        rate=a.rate,
        duration=a.duration,
        connect_concurrency=a.connect_concurrency,
        server_pid=a.server_pid,
        agent_cookie=a.agent_cookie,
        cookie_name=a.cookie_name,
        origin=a.origin,
        source_addresses=sources,
        max_seconds=a.max_seconds,
        drain_seconds=a.drain_seconds,
        ping_interval=a.ping_interval,
        connect_timeout=a.connect_timeout,
        compression=a.compression,
        label=a.label,
    )


def main(argv: list[str] | None = None) -> int:
    scenario = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = scenario.visitors + scenario.agents + scenario.connect_concurrency + 100
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
        except (ValueError, OSError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < want:
            log(f"warning: open-file limit {soft} is below the {want} sockets this run needs")

    async def guarded() -> dict[str, Any]:
        # The phases honour max_seconds themselves; this is the backstop if one of them hangs.
        try:
            return await asyncio.wait_for(run_scenario(scenario), scenario.max_seconds + 60)
        except TimeoutError:
            return {"label": scenario.label, "errors": {"hard_cap_exceeded": 1}}

    result = asyncio.run(guarded())
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
