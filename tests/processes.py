"""Real processes for end-to-end and fault tests: gofly servers and a TCP relay a test can cut.

A server runs `manage.py gofly_serve` (daphne) on a spare port of 127.0.0.1, on a fresh database
of its own (a SQLite file, or a new PostgreSQL database when DATABASE_URL is set) or on one that
another server already prepared. Only processes started here are stopped, by their own handles.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "demo-" + secrets.token_hex(6)
# One key for every server of a test run: servers sharing a database must accept each other's
# visitor tokens and session cookies, as the processes of one install do.
SECRET_KEY = secrets.token_urlsafe(50)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin_url(url: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/postgres"))


def fresh_database_url(tmp: Path) -> tuple[str, str | None]:
    """A database for one test's servers alone; returns (url, postgres name to drop)."""
    base = os.environ.get("DATABASE_URL")
    if not base:
        return f"sqlite:///{tmp / 'e2e.sqlite3'}", None
    import psycopg2

    name = "gofly_e2e_" + secrets.token_hex(4)
    conn = psycopg2.connect(_admin_url(base))
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return urlunparse(urlparse(base)._replace(path="/" + name)), name


def drop_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(_admin_url(os.environ["DATABASE_URL"]))
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


class ServerProcess:
    """A real gofly server (daphne), which a test can stop, restart or kill.

    Without `database_url` it makes a fresh database, migrates it, adds the demo site and agent
    (with the starter bot only when `bot` is true), and drops it on close. With one, it serves
    that database as it is (prepared by another ServerProcess, which owns it) and leaves it in
    place.
    """

    def __init__(
        self,
        tmp: Path,
        scheduler: bool = False,
        database_url: str | None = None,
        bot: bool = False,
    ) -> None:
        self.tmp = tmp
        self.bot = bot
        self.scheduler = scheduler
        self.pg_name: str | None = None
        fresh = database_url is None
        if database_url is None:
            database_url, self.pg_name = fresh_database_url(tmp)
        # The database as the test reaches it; a test may point the server elsewhere (a relay)
        # by changing env["DATABASE_URL"] before start().
        self.database_url = database_url
        self.env = {
            **os.environ,
            "GOFLY_DATA_DIR": str(tmp),
            "GOFLY_SECRET_KEY": SECRET_KEY,
            # With REDIS_URL set: Redis pub/sub ignores database numbers, and another install's
            # fresh database has a visitor 1 and a site 1 too, so groups need a prefix of their
            # own. Servers sharing a database must share it as well.
            "GOFLY_REDIS_PREFIX": "gofly-test-" + secrets.token_hex(4),
            "DATABASE_URL": database_url,
            "GOFLY_DEMO_PASSWORD": PASSWORD,
        }
        self.manage = [sys.executable, str(ROOT / "manage.py")]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        if fresh:
            self._prepare()

    def _prepare(self) -> None:
        subprocess.run([*self.manage, "migrate", "-v0"], env=self.env, check=True, cwd=ROOT)
        subprocess.run(
            [*self.manage, "gofly_demo", *([] if self.bot else ["--no-bot"])],
            env=self.env,
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )

    def shell(self, code: str) -> str:
        """Run Python in `manage.py shell` against this server's database; return its output."""
        done = subprocess.run(
            [*self.manage, "shell", "--no-imports", "-c", code],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def start(self) -> None:
        log = open(self.tmp / "server.log", "a")
        options = [] if self.scheduler else ["--no-scheduler"]
        self.process = subprocess.Popen(
            [*self.manage, "gofly_serve", "--port", str(self.port), *options],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                return
            except OSError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start: " + self.log_tail()) from exc
                time.sleep(0.2)

    def log_tail(self, chars: int = 2000) -> str:
        path = self.tmp / "server.log"
        return path.read_text()[-chars:] if path.exists() else ""

    def agent_cookie(self) -> str:
        """A session key logging the demo agent in, written to this server's database."""
        return subprocess.run(
            [sys.executable, "-m", "bench.agent_session"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()  # a process already killed by the test is simply reaped
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def close(self) -> None:
        self.stop()
        if self.pg_name:
            drop_database(self.pg_name)
        shutil.rmtree(self.tmp, ignore_errors=True)


def demo_site_key(base: str) -> str:
    """The demo site's key, read from the demo page's embed snippet."""
    html = urllib.request.urlopen(base + "/demo/", timeout=10).read().decode()
    return html.split('data-site="', 1)[1].split('"', 1)[0]


class TcpProxy:
    """A TCP relay on 127.0.0.1 to one target, which a test can cut and restore.

    Cut: every relayed connection is closed at once and the port stops listening, so new
    connections are refused, as when the target's host goes away. Restore listens again on the
    same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.accepted = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._acceptor: threading.Thread | None = None

    def url_for(self, database_url: str) -> str:
        """The same database URL, reaching the database through this relay."""
        parsed = urlparse(database_url)
        netloc = parsed.netloc.rsplit("@", 1)[0] + "@" if "@" in parsed.netloc else ""
        return urlunparse(parsed._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    def start(self) -> None:
        listener = socket.socket()
        # Restore binds the port the cut released; its closed connections may be in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)  # how soon the accept loop notices a cut
        self._stop = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener, self._stop), daemon=True
        )
        self._acceptor.start()

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        with listener:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                client.settimeout(None)
                with self._lock:
                    self.accepted += 1
                    self._sockets.update((client, upstream))
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(5)
            self._acceptor = None
        with self._lock:
            live = list(self._sockets)
        for sock in live:
            self._drop(sock)

    def restore(self) -> None:
        self.start()

    def close(self) -> None:
        self.cut()
