"""Turn `bench/loadtest.py` JSON results into the Markdown table rows of docs/performance.md.

.venv/bin/python -m bench.summarize RESULT.json [RESULT.json ...]
"""

from __future__ import annotations

import json
import sys
from typing import Any

HEADER = (
    "| setup | N visitors | M agents | rate (msg/s) | connected | sockets/s | connect p50 / p99 ms "
    "| ack p50 / p95 / p99 ms | forward p50 / p95 / p99 ms | acked / fwd of sent "
    "| RSS KiB/socket | server CPU % | loadgen CPU % | load avg | errors |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _ms(value: Any) -> str:
    if value is None:
        return "–"
    if value >= 10_000:
        return f"{value / 1000:.0f} s"
    if value >= 1000:
        return f"{value / 1000:.1f} s"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def row(result: dict[str, Any]) -> str:
    sc = result["scenario"]
    label = result.get("label") or sc["url"]
    setup = label.split(" N=")[0]
    con = result["connect"]
    msg = result["messages"]
    ack = result["ack_latency_ms"]
    fwd = result["forward_latency_ms"]
    errors = result["errors"]
    shown = ", ".join(f"{k} {v}" for k, v in errors.items()) or "none"
    return (
        f"| {setup} | {sc['visitors']} | {sc['agents']} | {sc['rate']:g} "
        f"| {con['visitors_connected']} | {con['sockets_per_second']} "
        f"| {_ms(con['per_socket_ms']['p50'])} / {_ms(con['per_socket_ms']['p99'])} "
        f"| {_ms(ack['p50'])} / {_ms(ack['p95'])} / {_ms(ack['p99'])} "
        f"| {_ms(fwd['p50'])} / {_ms(fwd['p95'])} / {_ms(fwd['p99'])} "
        f"| {msg['acked']} / {msg['forwarded_first_agent']} of {msg['sent']} "
        f"| {result['server']['rss_growth_kib_per_connection']} "
        f"| {result['server']['cpu_percent_send_phase']} "
        f"| {result['loadgen']['cpu_percent']} "
        f"| {result.get('machine', {}).get('loadavg_at_start', ['–'])[0]} | {shown} |"
    )


def main(paths: list[str]) -> None:
    print(HEADER)
    for path in paths:
        with open(path) as fh:
            print(row(json.load(fh)))


if __name__ == "__main__":
    main(sys.argv[1:])
