"""Bounded load on the web app's JSON API: N concurrent clients for T seconds against 127.0.0.1.

Starts `qdeploy serve` (the bundled model unless a run dir is given) on a free loopback port,
or targets --url (loopback only). Prints requests/s, latency percentiles and the error count.

    .venv/bin/python bench/load_app.py [--clients 32] [--seconds 20] [RUN_DIR]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "app"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def client(url: str, images: list[bytes], deadline: float, idx: int):
    lat, codes = [], {}
    with httpx.Client(timeout=60) as c:
        i = idx
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                code = c.post(url + "/api/predict", files={"file": ("x.jpg", images[i % len(images)])}).status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            lat.append(time.perf_counter() - t0)
            codes[code] = codes.get(code, 0) + 1
            i += 1
    return lat, codes


def main() -> int:
    from test_server import start_server, stop  # the tests' own loopback server starter

    from qdeploy.settings import default_data

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--url")
    args = ap.parse_args()
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("load tests run against loopback only (127.0.0.1)")
    data = default_data()
    images = [p.read_bytes() for c in sorted((data / "test").iterdir()) for p in sorted(c.iterdir())[:5]]
    proc = None
    url = args.url
    if not url:
        extra = []  # the server's defaults: 4 inferences at once, 64 waiting
        proc, url = start_server(*extra, target=args.run_dir)
    try:
        deadline = time.perf_counter() + args.seconds
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda i: client(url, images, deadline, i), range(args.clients)))
        wall = time.perf_counter() - t0
    finally:
        if proc:
            stop(proc)
    lat = np.concatenate([np.asarray(r[0]) for r in results]) * 1e3
    codes: dict = {}
    for _, c in results:
        for k, v in c.items():
            codes[k] = codes.get(k, 0) + v
    errors = sum(v for k, v in codes.items() if k != 200)
    print("| clients | seconds | requests | req/s | p50 ms | p90 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.clients} | {wall:.1f} | {len(lat)} | {len(lat) / wall:.1f} | {np.percentile(lat, 50):.1f} | "
          f"{np.percentile(lat, 90):.1f} | {np.percentile(lat, 99):.1f} | {errors} |")
    print(f"status codes: {codes}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
