"""Drive Stream-Framework (in its own venv) from a bench running in the service's venv.

    async with StreamFramework.start("current", "redis://127.0.0.1:6379/8") as sf:
        seconds = await sf.fanout(["r1", "r2"], "koo-1", created_ms)

One ``bench/sf/runner.py serve`` subprocess per instance, spoken to in JSON
lines, so a bench can interleave Stream-Framework's fan-out with its own chunk
by chunk on the same Redis. ``available()`` says which variants bench/sf-env.sh
has built; ``ensure()`` builds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent.parent
RUNNER = ROOT / "bench" / "sf" / "runner.py"
ENV_SCRIPT = ROOT / "bench" / "sf-env.sh"
VARIANTS = {  # name -> (venv, what it is)
    "current": (".cache/bench-sf", "today's redis-py (with hiredis)"),
    "redis2": (".cache/bench-sf-redis2", "redis-py 2.10.6, its own era's"),
}


class StreamFrameworkError(RuntimeError):
    """The runner answered with an error or went away."""


def python(variant: str) -> Path:
    return ROOT / VARIANTS[variant][0] / "bin" / "python"


def available() -> list[str]:
    """The variants whose venv exists."""
    return [v for v in VARIANTS if python(v).exists()]


def ensure(variants: Sequence[str] = tuple(VARIANTS)) -> tuple[list[str], str]:
    """Build missing venvs with bench/sf-env.sh; returns (ready variants, its output)."""
    done = subprocess.run(["bash", str(ENV_SCRIPT), *variants], cwd=ROOT, text=True,
                          capture_output=True, check=False)
    output = (done.stdout + done.stderr).strip()
    lines = [ln for ln in output.splitlines() if "is ignored: it is neither" not in ln]
    return [v for v in variants if python(v).exists()], "\n".join(lines)


class StreamFramework:
    """One Stream-Framework process answering requests in order."""

    def __init__(self, variant: str, process: asyncio.subprocess.Process) -> None:
        self.variant = variant
        self.process = process
        self.info: dict[str, Any] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, variant: str, redis_url: str) -> AsyncIterator[StreamFramework]:
        process = await asyncio.create_subprocess_exec(
            str(python(variant)), str(RUNNER), "serve", "--redis-url", redis_url,
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        sf = cls(variant, process)
        try:
            sf.info = await sf.request({"op": "versions"})
            yield sf
        finally:
            with contextlib.suppress(Exception):
                await sf.request({"op": "quit"}, answer=False)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def request(self, body: dict[str, Any], *, answer: bool = True) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:
            raise StreamFrameworkError("runner has no pipes")
        stdin.write(orjson.dumps(body) + b"\n")
        await stdin.drain()
        if not answer:
            return {}
        line = await stdout.readline()
        if not line:
            raise StreamFrameworkError(f"runner ({self.variant}) exited: {body.get('op')}")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise StreamFrameworkError(f"runner ({self.variant}): {reply['error']}")
        return reply

    async def fanout(self, readers: Sequence[str], koo: str, created: int) -> float:
        """Stream-Framework's fan-out of one koo to ``readers``; its own seconds."""
        reply = await self.request({"op": "fanout", "readers": list(readers), "koo": koo,
                                    "created": created})
        if reply["written"] != len(readers):
            raise StreamFrameworkError(f"wrote {reply['written']} of {len(readers)}")
        return float(reply["seconds"])

    async def reset(self, readers: Sequence[str]) -> None:
        """Delete these readers' Stream-Framework timelines."""
        await self.request({"op": "reset", "readers": list(readers)})

    async def read(self, readers: int, samples: int) -> dict[str, Any]:
        """``samples`` hydrated 25-item reads over ``readers`` timelines of 100 entries."""
        return await self.request({"op": "read", "readers": readers, "samples": samples})

    async def memory(self, timelines: int, entries: int) -> dict[str, Any]:
        """Bytes per timeline entry over ``timelines`` sets of ``entries`` each."""
        return await self.request({"op": "memory", "timelines": timelines,
                                   "entries": entries})
