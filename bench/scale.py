"""Evaluation throughput on Ray against one process, what Ray costs for a small run, and a worked estimate of a
large one (ImageNet-50k x 10 variants) on 1, 8 and 64 nodes from costs measured here.

    .venv/bin/python bench/scale.py RUN_DIR [--images 4096] [--rounds 2] [--big-run runs/effl0_ov]

Throughput: RUN_DIR's FP32 and every INT8 ONNX variant over the first --images CIFAR-10 test images (the run's
preprocessing), as image-inferences per second (images x models / wall time), in rounds that alternate:
  local, 2 threads   one process, ORT on both cores (what `qdeploy run` does)
  local, 1 thread    one process, one core
  ray, 1 worker      a 2-CPU local Ray cluster, one shard at a time (a task holds both CPUs), 1 ORT thread
  ray, 2 workers     the same cluster, two shards at a time (1 CPU, 1 ORT thread each)
The Ray cluster is started once (its start is reported separately) and kept for every Ray row.
Overhead: a small run (500 images) local vs on Ray, Ray's wall time with and without starting the cluster.
Estimate: per-image costs measured on --big-run (a 224-px run: decode + every model's inference, one thread),
scaled on paper to N nodes of this machine's size; the assumptions are printed with the table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from qdeploy.artifacts import read_info
from qdeploy.data import DataConfig, open_calib_eval
from qdeploy.distributed import RayConfig
from qdeploy.distributed.evaluate import evaluate_sharded
from qdeploy.evaluate import EvalConfig, evaluate_many
from qdeploy.results import RunResult
from qdeploy.settings import default_data
from qdeploy.targets import open_session


def model_files(run_dir: Path) -> dict:
    rep = RunResult.load(run_dir / "report.json")
    return {v.name: (run_dir / v.file, "ort-cpu") for v in rep.variants
            if v.ok and v.file.endswith(".onnx") and v.target == "ort-cpu"}


def local_eval(files, ev, spec, threads) -> float:
    sessions = {n: open_session(p, threads).run for n, (p, _) in files.items()}
    t0 = time.perf_counter()
    evaluate_many(sessions, ev, spec, ev.classes, EvalConfig(progress=False, threads=threads))
    return time.perf_counter() - t0


def ray_eval(files, ev, spec, ray, cpus_per_task, shard_batches=2) -> float:
    rcfg = RayConfig(cpus_per_task=cpus_per_task, threads=1, shard_batches=shard_batches)  # 512-image shards at 32 px
    t0 = time.perf_counter()
    evaluate_sharded(files, ev, spec, ev.classes, EvalConfig(progress=False), rcfg, ray, progress=False)
    return time.perf_counter() - t0


def per_image_costs(run_dir: Path, n: int = 64) -> dict:
    """Seconds per image, one thread: decoding a photo to the model's input, and each model's inference at the
    evaluation batch size."""
    from qdeploy.data import batch_for

    files = model_files(run_dir)
    spec = read_info(next(iter(files.values()))[0]).require_preprocess()
    kodak = default_data().parent / "kodak24"
    photos = sorted(p for p in kodak.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    from PIL import Image

    t0 = time.perf_counter()
    xs = []
    for i in range(n):
        with Image.open(photos[i % len(photos)]) as im:
            xs.append(np.asarray(spec.resize_image(im.convert("RGB"))))
    decode = (time.perf_counter() - t0) / n
    x = spec.normalize(np.stack(xs))
    b = batch_for(spec.side)
    infer = {}
    for name, (p, _) in files.items():
        s = open_session(p, 1)
        s.run(x[:b])
        t0 = time.perf_counter()
        for i in range(0, n, b):
            s.run(x[i:i + b])
        infer[name] = (time.perf_counter() - t0) / n
    return {"decode": decode, "infer": infer, "batch": b, "side": spec.side, "photo": f"{photos[0].name} ..."}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--big-run", type=Path, default=Path("runs/effl0_ov"))
    args = ap.parse_args()
    import ray

    files = model_files(args.run_dir)
    spec = read_info(next(iter(files.values()))[0]).require_preprocess()
    ev = open_calib_eval(DataConfig(root=str(default_data()), calib_size=1, eval_limit=args.images))[1]
    small = open_calib_eval(DataConfig(root=str(default_data()), calib_size=1, eval_limit=500))[1]
    work = len(ev) * len(files)
    print(f"models: {', '.join(files)} ({args.run_dir}); {len(ev)} CIFAR-10 test images at {spec.side} px; "
          f"{args.rounds} rounds, rows alternate within each round")

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t0
    ray_eval(files, small, spec, ray, 1.0)          # workers up and sessions loaded once, as a long run would have
    modes = {"local, 2 threads": lambda: local_eval(files, ev, spec, 2),
             "local, 1 thread": lambda: local_eval(files, ev, spec, 1),
             "ray, 1 worker": lambda: ray_eval(files, ev, spec, ray, 2.0),
             "ray, 2 workers": lambda: ray_eval(files, ev, spec, ray, 1.0)}
    times = {m: [] for m in modes}
    for _ in range(args.rounds):
        for m, fn in modes.items():
            times[m].append(fn())
    small_ray = ray_eval(files, small, spec, ray, 1.0, shard_batches=1)     # 2 shards: both workers busy
    ray.shutdown()
    small_local = local_eval(files, small, spec, 2)
    small_local1 = local_eval(files, small, spec, 1)

    print("\n| mode | wall s (median) | image-inferences/s | vs local 2 threads | vs ray 1 worker |")
    print("|---|---|---|---|---|")
    med = {m: float(np.median(t)) for m, t in times.items()}
    for m in modes:
        print(f"| {m} | {med[m]:.2f} | {work / med[m]:.0f} | {med['local, 2 threads'] / med[m]:.2f}x | "
              f"{med['ray, 1 worker'] / med[m]:.2f}x |")
    print(f"\nRay cluster start (2 CPUs, local): {start_s:.1f} s, once per run.")
    print(f"Small run, {len(small)} images x {len(files)} models in 2 shards: local {small_local:.2f} s (2 threads), "
          f"{small_local1:.2f} s (1 thread); Ray, 2 workers, {small_ray:.2f} s with warm workers, "
          f"{small_ray + start_s:.1f} s counting the cluster start ({(small_ray + start_s) / small_local:.1f}x local).")

    if not (args.big_run / "report.json").is_file():
        print(f"\n(no {args.big_run}: skipping the estimate)")
        return 0
    c = per_image_costs(args.big_run)
    variants = 10
    mean_infer = float(np.mean(list(c["infer"].values())))
    per_image = c["decode"] + variants * mean_infer      # one worker thread: decode once, every variant infers
    print(f"\nEstimate: ImageNet validation (50,000 images) x {variants} variants at {c['side']} px, from "
          f"{args.big_run}'s models measured here on one thread at batch {c['batch']}: decode + resize "
          f"{c['decode'] * 1e3:.1f} ms/image (Kodak photos, larger than ImageNet's ~500x375), inference "
          + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in c["infer"].items())
          + f" ms/image (mean {mean_infer * 1e3:.1f}, taken for each of the {variants} variants).")
    scale = med["ray, 1 worker"] / med["ray, 2 workers"]   # what the node's second worker adds, measured above
    shard = RayConfig().batches_per_shard(c["batch"]) * c["batch"]
    shards = -(-50_000 // shard)
    # Ray's cost per shard beyond the computation: one worker against one local thread, same images, same batches
    main_shards = -(-len(ev) // 512)
    per_shard = max(0.0, med["ray, 1 worker"] - med["local, 1 thread"]) / main_shards
    print(f"Nodes like this one: 2 cores, 2 single-thread workers; the second worker adds {scale:.2f}x (measured "
          f"above, ray 1 vs 2 workers), so a node does {scale:.2f} / {per_image:.3f} s = {scale / per_image:.1f} "
          f"images/s through all {variants} variants. Default shards ({shard} images, {shards} shards); "
          f"{per_shard:.2f} s of Ray overhead per shard (ray 1 worker vs local 1 thread above), spread over the workers; the cluster "
          f"start ({start_s:.0f} s here) once. Not counted: reading 6.4 GB of JPEGs from shared storage, stragglers.")
    print("\n| nodes | workers | shards at once | waves | compute h | Ray overhead min | wall h | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    shard_s = shard * per_image * 2 / scale       # one worker's time for one shard (both workers of a node busy)
    for nodes in (1, 8, 64):
        workers = 2 * nodes
        waves = -(-shards // workers)             # a shard is the unit of work: more workers than shards idle
        compute = waves * shard_s
        overhead = start_s + waves * per_shard
        print(f"| {nodes} | {workers} | {min(workers, shards)} | {waves} | {compute / 3600:.2f} | {overhead / 60:.1f} | "
              f"{(compute + overhead) / 3600:.2f} | {50_000 / (compute + overhead):.0f} |")
    print(f"At 64 nodes the {shards} shards of {shard} images leave {max(0, 128 - shards)} of 128 workers idle: "
          "smaller shards (RayConfig.shard_images) would use them. Not counted either: the logits shipped to the "
          "driver (50,000 x 1,000 classes x 4 B x 10 variants = 2 GB) and the driver's scoring of them.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
