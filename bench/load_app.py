"""Bounded load on the serving routes: N concurrent clients for T seconds against 127.0.0.1.

Starts `qdeploy serve` (the bundled model unless a run dir is given) on a free loopback port,
or targets --url (loopback only). Prints requests/s, latency percentiles, the error count and the server's peak RSS (VmHWM).

    .venv/bin/python bench/load_app.py [--clients 32] [--seconds 20] [--route predict|v2] [RUN_DIR]
        [--max-batch 1,16 --rounds 2] [--binary] [--images DIR]

--max-batch: server settings compared side by side (dynamic batching off = 1); each round starts a fresh server
per setting, in turn, so the settings interleave; the table sums the rounds and adds the mean batch per model
run read from the server's /metrics. The clients run on the same machine as the server (they share its cores).

--route predict: JPEG uploads to /api/predict (decode, preprocess, every variant once per request).
--route predict --variant NAME: the same uploads, that model alone (?variant=NAME).
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


def v2_requests(paths, run_dir, binary: bool = False) -> list:
    """One preprocessed real image per request, as KServe v2 JSON, to each ONNX variant of the run in turn.
    binary: the tensor as raw bytes after the JSON header and the output asked back binary (the binary tensor
    extension, tritonclient's default), instead of JSON numbers (a 512-px image is 786,432 of them)."""
    import json

    from PIL import Image

    from qdeploy.app.predictor import resolve_models
    from qdeploy.artifacts import read_info
    from qdeploy.bundled import bundled_run_dir

    models = resolve_models([run_dir or bundled_run_dir()])[0]
    infos = [read_info(m) for m in models]
    spec = infos[0].require_preprocess()
    out = []
    for i, p in enumerate(paths):
        x = spec.normalize(np.asarray(spec.resize_image(Image.open(p).convert("RGB"))))
        path = f"/v2/models/{infos[i % len(infos)].variant}/infer"
        tensor = {"name": infos[0].input_name, "shape": list(x.shape), "datatype": "FP32"}
        if binary:
            raw = np.ascontiguousarray(x, np.float32).tobytes()
            head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
                               "parameters": {"binary_data_output": True}}).encode()
            out.append((path, {"content": head + raw,
                               "headers": {"content-type": "application/octet-stream",
                                           "inference-header-content-length": str(len(head))}}))
            continue
        body = {"inputs": [{**tensor, "data": x.reshape(-1).tolist()}]}
        out.append((path, {"content": json.dumps(body), "headers": {"content-type": "application/json"}}))
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
    ap.add_argument("--images", help="request images: an ImageFolder split (5 per class) or a folder of photos "
                    "(default: the CIFAR-10 test split)")
    ap.add_argument("--binary", action="store_true", help="--route v2: the binary tensor extension, not JSON data")
    ap.add_argument("--variant", help="--route predict: ?variant=NAME (that model alone) instead of every variant")
    ap.add_argument("--max-batch", help="comma list of server --max-batch settings to compare, e.g. 1,16")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("load tests run against loopback only (127.0.0.1)")
    data = default_data()
    paths = _request_images(Path(args.images) if args.images else data / "test")
    route = "/api/predict" + (f"?variant={args.variant}" if args.variant else "")
    requests = [(route, {"files": {"file": ("x.jpg", p.read_bytes())}}) for p in paths]
    if args.route == "v2":
        requests = v2_requests(paths, args.run_dir, binary=args.binary)
    settings = [int(v) for v in args.max_batch.split(",")] if args.max_batch else [None]
    if args.url and args.max_batch:
        sys.exit("--max-batch starts its own servers; leave out --url")
    agg = {mb: {"lat": [], "codes": {}, "wall": 0.0, "runs": 0.0, "rows": 0.0} for mb in settings}
    for _ in range(args.rounds):
        for mb in settings:
            proc, url = None, args.url
            if not url:  # the server's defaults (4 batches at once, 64 waiting) unless --max-batch
                proc, url = start_server(*(["--max-batch", str(mb)] if mb is not None else []), target=args.run_dir)
            try:
                deadline = time.perf_counter() + args.seconds
                t0 = time.perf_counter()
                with cf.ThreadPoolExecutor(args.clients) as pool:
                    results = list(pool.map(lambda i: client(url, requests, deadline, i), range(args.clients)))
                agg[mb]["wall"] += time.perf_counter() - t0
                runs, rows = _batch_counts(url)
                agg[mb]["runs"] += runs
                agg[mb]["rows"] += rows
                if proc:
                    agg[mb]["rss"] = max(agg[mb].get("rss", 0.0), _peak_rss_mb(proc.pid))
            finally:
                if proc:
                    stop(proc)
            for lat, codes in results:
                agg[mb]["lat"].append(np.asarray(lat))
                for k, v in codes.items():
                    agg[mb]["codes"][k] = agg[mb]["codes"].get(k, 0) + v
    print("| route | max batch | clients | seconds | requests | req/s | p50 ms | p90 ms | p99 ms | mean batch | errors | "
          "server peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    errors_all = 0
    for mb, a in agg.items():
        lat = np.concatenate(a["lat"]) * 1e3
        errors = sum(v for k, v in a["codes"].items() if k != 200)
        errors_all += errors
        mean = f"{a['rows'] / a['runs']:.2f}" if a["runs"] else "-"
        print(f"| {args.route} | {mb or 'default'} | {args.clients} | {a['wall']:.1f} | {len(lat)} | "
              f"{len(lat) / a['wall']:.1f} | {np.percentile(lat, 50):.1f} | {np.percentile(lat, 90):.1f} | "
              f"{np.percentile(lat, 99):.1f} | {mean} | {errors} | {a.get('rss', 0.0):.0f} |")
    for mb, a in agg.items():
        print(f"status codes (max batch {mb or 'default'}): {a['codes']}")
    return 0 if errors_all == 0 else 1


def _request_images(root: Path) -> list[Path]:
    """5 images per class of an ImageFolder split, or every photo of a flat folder (e.g. kodak24)."""
    if not root.is_dir():
        sys.exit(f"--images {root}: not a folder")
    classes = [c for c in sorted(root.iterdir()) if c.is_dir()]
    paths = ([p for c in classes for p in sorted(c.iterdir())[:5]] if classes
             else [p for p in sorted(root.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")])
    if not paths:
        sys.exit(f"--images {root}: no images")
    return paths


def _peak_rss_mb(pid: int) -> float:
    """The server process's peak resident set (VmHWM), read before it is stopped; 0 where /proc has no entry."""
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def _batch_counts(url: str) -> tuple[float, float]:
    """(model runs, rows) summed over variants from the server's batching gauges (0, 0 when not batching)."""
    try:
        text = httpx.get(url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return 0.0, 0.0
    runs = sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("qdeploy_batch_runs{"))
    rows = sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("qdeploy_batch_rows{"))
    return runs, rows


if __name__ == "__main__":
    sys.exit(main())
