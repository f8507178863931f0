"""The plain Channels baseline app (bench/plain) serves bench/loadtest.py as gofly does:
a smoke test with tiny numbers, counting, never timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

from tests.processes import ROOT, free_port


def wait_until_serving(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the plain app exited"
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/widget/v1/sessions", data=b"{}", method="POST"
            )
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 201:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the plain app never answered")


def test_loadtest_drives_the_plain_channels_app_unchanged(tmp_path):
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.plain.settings"}
    env.pop("REDIS_URL", None)  # the in-memory layer: one process, nothing shared
    log = open(tmp_path / "plain.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "bench.plain.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until_serving(port, server)
        done = subprocess.run(
            [sys.executable, "-m", "bench.loadtest", "--url", f"http://127.0.0.1:{port}",
             "--site", "plain", "--agent-cookie", "unused", "--visitors", "6", "--agents", "2",
             "--rate", "4", "--duration", "2", "--server-pid", str(server.pid),
             "--max-seconds", "60"],
            cwd=ROOT, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(20)
        log.close()
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    messages = result["messages"]
    assert result["connect"]["visitors_connected"] == 6
    assert result["connect"]["agents_connected"] == 2
    assert messages["sent"] == messages["planned"] == messages["acked"] == 8
    assert messages["forwarded_per_agent"] == [8, 8]
    assert (messages["duplicate_acks"], messages["duplicate_forwards"]) == (0, 0)
