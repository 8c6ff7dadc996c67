"""Load on `facesynth serve`: many concurrent face requests over loopback, with and without batching.

The real server (uvicorn, the bundled model unless --ckpt) runs in a process of its own on a free
loopback port, as `facesynth serve` does.  An httpx client in this process fires ``--requests``
GET /api/face at once, each for a different seed (so the PNG cache cannot answer), and records each
one's latency.  Rounds: batching as served (requests within a few ms share a forward pass of up to
16 faces, or --max-batch), batching off (max_batch 1: one pass per face), and the same seeds again
(answered from the cache).  Writes results/web_load.json and results/web_load.md.

    python benchmarks/web_load.py [--requests 100] [--threads N] [--max-batch N] [--ckpt PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from report import environment, write_results

from facesynth.web.settings import ServerSettings

HERE = Path(__file__).resolve().parent


async def burst(url: str, seeds: list[int], psi: float = 0.7) -> dict:
    """Every request at once; latency percentiles, errors, wall time."""
    limits = httpx.Limits(max_connections=len(seeds), max_keepalive_connections=len(seeds))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as http:
        async def one(seed: int) -> tuple[float, str | None]:
            t0 = time.perf_counter()
            try:
                r = await http.get("/api/face", params={"seed": seed, "psi": psi})
                ok = r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
                return time.perf_counter() - t0, None if ok else f"{r.status_code}: {r.text[:80]}"
            except httpx.HTTPError as e:
                return time.perf_counter() - t0, f"{type(e).__name__}: {e}"

        before = (await http.get("/api/stats")).json()["batcher"]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(s) for s in seeds))
        wall = time.perf_counter() - t0
        after = (await http.get("/api/stats")).json()["batcher"]
    lat = np.array([t for t, _ in results]) * 1000
    errors = [e for _, e in results if e]
    batches = after["batches"] - before["batches"]
    return {"requests": len(seeds), "errors": len(errors), "error_samples": errors[:5],
            "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()), "wall_s": wall,
            "requests_per_s": len(seeds) / wall, "forward_passes": batches,
            "mean_batch": (after["faces"] - before["faces"]) / batches if batches else 0.0}


@contextlib.contextmanager
def server(settings: dict):
    """`serve(ServerSettings(**settings))` in a child process (the client must not share its GIL); its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import json, sys; from facesynth.web import ServerSettings, serve; "
            "serve(ServerSettings(**json.loads(sys.argv[1])), port=int(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(settings), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def round_on(settings: dict, seeds: list[int], repeat_cached: bool = False) -> list[dict]:
    with server(settings) as url:
        asyncio.run(burst(url, [2**31 - 1 - i for i in range(4)]))  # warm-up: first passes, connections
        rounds = [asyncio.run(burst(url, seeds))]
        if repeat_cached:
            rounds.append(asyncio.run(burst(url, seeds)))
    return rounds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--max-batch", type=int, default=None, help="the server's batch cap (default: its own)")
    ap.add_argument("--no-compare", action="store_true", help="skip the round with batching off")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()

    seeds = list(range(1000, 1000 + args.requests))
    base = dict(ckpt=args.ckpt, threads=args.threads)
    cap = args.max_batch or ServerSettings().max_batch
    batched, cached = round_on({**base, "max_batch": cap}, seeds, repeat_cached=True)
    window = ServerSettings().batch_window_ms
    rows = [(f"batched (window {window:g} ms, up to {cap})", batched), ("cached (same seeds again)", cached)]
    if not args.no_compare:
        rows.insert(1, ("batching off (max_batch 1)", round_on({**base, "max_batch": 1}, seeds)[0]))

    threads = args.threads or torch.get_num_threads()
    payload = {"environment": {**environment(torch.device("cpu"), requests=args.requests), "threads": threads},
               "rounds": {name: r for name, r in rows}}
    lines = [f"# facesynth serve under load: {args.requests} concurrent GET /api/face (different seeds), loopback",
             "", f"{payload['environment']['cpus']} CPUs, {threads} torch threads in the server, "
             f"torch {torch.__version__}; {payload['environment']['time']}", "",
             "| round | p50 ms | p90 ms | p99 ms | max ms | errors | req/s | forward passes | mean batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['p99_ms']:.0f} | {r['max_ms']:.0f} | "
                     f"{r['errors']} | {r['requests_per_s']:.1f} | {r['forward_passes']} | {r['mean_batch']:.1f} |")
    write_results(args.out, "web_load", payload, lines)
    return 0 if all(r["errors"] == 0 for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
