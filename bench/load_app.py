"""Bounded load on the serving routes: N concurrent clients for T seconds against 127.0.0.1.

Starts `qdeploy serve` (the bundled model unless a run dir is given) on a free loopback port,
or targets --url (loopback only). Prints requests/s, latency percentiles and the error count.

    .venv/bin/python bench/load_app.py [--clients 32] [--seconds 20] [--route predict|v2] [RUN_DIR]

--route predict: JPEG uploads to /api/predict (decode, preprocess, every variant once per request).
--route v2: preprocessed tensors (one real image each, JSON) to /v2/models/<variant>/infer, the variants in turn.
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


def client(url: str, requests: list, deadline: float, idx: int):
    """requests: (path, kwargs for httpx.post), cycled from a per-client offset."""
    lat, codes = [], {}
    with httpx.Client(timeout=60) as c:
        i = idx
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            path, kw = requests[i % len(requests)]
            try:
                code = c.post(url + path, **kw).status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            lat.append(time.perf_counter() - t0)
            codes[code] = codes.get(code, 0) + 1
            i += 1
    return lat, codes


def v2_requests(paths, run_dir) -> list:
    """One preprocessed real image per request, as KServe v2 JSON, to each ONNX variant of the run in turn."""
    import json

    from PIL import Image

    from qdeploy.app.predictor import resolve_models
    from qdeploy.artifacts import read_info
    from qdeploy.bundled import bundled_run_dir

    models, _ = resolve_models([run_dir or bundled_run_dir()])
    infos = [read_info(m) for m in models]
    spec = infos[0].require_preprocess()
    out = []
    for i, p in enumerate(paths):
        x = spec.normalize(np.asarray(spec.resize_image(Image.open(p).convert("RGB"))))
        body = {"inputs": [{"name": infos[0].input_name, "shape": list(x.shape), "datatype": "FP32",
                            "data": x.reshape(-1).tolist()}]}
        out.append((f"/v2/models/{infos[i % len(infos)].variant}/infer",
                    {"content": json.dumps(body), "headers": {"content-type": "application/json"}}))
    return out


def main() -> int:
    from test_server import start_server, stop  # the tests' own loopback server starter

    from qdeploy.settings import default_data

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--url")
    ap.add_argument("--route", choices=("predict", "v2"), default="predict")
    args = ap.parse_args()
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("load tests run against loopback only (127.0.0.1)")
    data = default_data()
    paths = [p for c in sorted((data / "test").iterdir()) for p in sorted(c.iterdir())[:5]]
    requests = [("/api/predict", {"files": {"file": ("x.jpg", p.read_bytes())}}) for p in paths]
    if args.route == "v2":
        requests = v2_requests(paths, args.run_dir)
    proc = None
    url = args.url
    if not url:
        extra = []  # the server's defaults: 4 inferences at once, 64 waiting
        proc, url = start_server(*extra, target=args.run_dir)
    try:
        deadline = time.perf_counter() + args.seconds
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda i: client(url, requests, deadline, i), range(args.clients)))
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
    print("| route | clients | seconds | requests | req/s | p50 ms | p90 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.route} | {args.clients} | {wall:.1f} | {len(lat)} | {len(lat) / wall:.1f} | {np.percentile(lat, 50):.1f} | "
          f"{np.percentile(lat, 90):.1f} | {np.percentile(lat, 99):.1f} | {errors} |")
    print(f"status codes: {codes}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
