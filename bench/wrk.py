"""Drive ingest with wrk when it is installed: a C client cannot be the bottleneck.

wrk runs a generated Lua script that gives every request a fresh event `id` (a tag
per run, the thread number and a counter) and prints its summary as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import FIXTURE, HOTTOK, Child

WRK_THREADS = 2  # one per core on the reference machine
MARKER = "WRKJSON "

LUA = """
local prefix = [==[{prefix}]==]
local suffix = [==[{suffix}]==]
local headers = {{["Content-Type"] = "application/json", ["X-HOTMART-HOTTOK"] = "{hottok}"}}
local counter = 0
local threads_started = 0

function setup(thread)
  threads_started = threads_started + 1
  thread:set("tid", threads_started)
end

function request()
  counter = counter + 1
  local id = string.format("{tag}-%d-%010d", tid, counter)
  return wrk.format("POST", nil, headers, prefix .. id .. suffix)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests": %d, "duration_us": %d, "non_2xx": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p95_us": %d, ' ..
    '"p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    percentiles_ms: dict[str, float]
    server_cpu_s: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    def summary(self) -> dict[str, Any]:
        return {
            "requests_per_s": round(self.rps, 1),
            "requests": self.requests,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "window_s": round(self.duration_s, 2),
            "response_time": self.percentiles_ms,
            "server_cpu_share": (
                None if self.server_cpu_s is None else round(self.server_cpu_s / self.duration_s, 2)
            ),
        }


def write_script(workdir: Path) -> Path:
    raw = FIXTURE.read_text(encoding="utf-8")
    original_id = json.loads(raw)["id"]
    prefix, suffix = raw.split(original_id, 1)
    script = workdir / f"ingest-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(
        LUA.format(
            prefix=prefix,
            suffix=suffix,
            hottok=HOTTOK,
            tag=uuid.uuid4().hex,
            marker=MARKER,
        ),
        encoding="utf-8",
    )
    return script


async def run_wrk(
    url: str, server: Child, workdir: Path, *, connections: int, duration_s: float
) -> WrkResult:
    """One wrk run of `duration_s`; the caller warms up with a short run first."""
    script = write_script(workdir)  # a new tag: ids never repeat across runs
    cpu_before = server.cpu_s()
    process = await asyncio.create_subprocess_exec(
        "wrk",
        f"--threads={WRK_THREADS}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        "--timeout=10s",
        f"--script={script}",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    cpu_after = server.cpu_s()
    text = output.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith(MARKER)), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {process.returncode}):\n{text}")
    data = json.loads(line.removeprefix(MARKER))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        non_2xx=data["non_2xx"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        percentiles_ms={
            "median_ms": data["p50_us"] / 1000,
            "p95_ms": data["p95_us"] / 1000,
            "p99_ms": data["p99_us"] / 1000,
            "max_ms": data["max_us"] / 1000,
        },
        server_cpu_s=(None if cpu_before is None or cpu_after is None else cpu_after - cpu_before),
    )
