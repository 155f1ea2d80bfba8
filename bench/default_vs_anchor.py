"""Issue 35's table: the README's main job as a user runs it (no flags), its wall time and what it recommends, then
that deployment timed beside OpenVINO+NNCF INT8 of the same FP32 file (the anchor) in one process, interleaved.

    .venv/bin/python bench/default_vs_anchor.py [--out runs/anchor] [--runs 300] [--sample 2000]
        [--run-args "--auto --targets ort-cpu,openvino-cpu"]

1. `qdeploy run --out OUT` in a subprocess (plus --run-args, e.g. the auto search across both runtimes), wall-clock
   timed, stage times from its manifest (and the search's own seconds when it searched).
2. NNCF INT8 (performance preset, the run's own 300 calibration images) of OUT/fp32.onnx, here.
3. Batch-1 p50/p99 of ORT FP32, every (variant, target) of the run and the NNCF IR, interleaved (bench.benchmark_many),
   each as a ratio to NNCF's p50.
4. NNCF's quality on a stratified sample of the test set beside ORT FP32 on the same images (the run's own rows are
   its report's, on the whole set; --sample 0: NNCF on the whole set too).
Prints the CPU and the flags that decide the recipe (VNNI, BF16, AMX) with the table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qdeploy.artifacts import read_info
from qdeploy.bench import BenchConfig, benchmark_many, cpu_name, session_runner
from qdeploy.data import DataConfig, open_calib_eval
from qdeploy.evaluate import EvalConfig, evaluate_many, sample_mask
from qdeploy.results import Environment, RunResult
from qdeploy.settings import default_data
from qdeploy.targets import open_session
from qdeploy.targets.ort import cpu_isa


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/anchor")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--run-args", default="", help="more `qdeploy run` flags (default: none, the README's main job)")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    extra = shlex.split(args.run_args)
    subprocess.run([sys.executable, "-m", "qdeploy", "run", "--out", str(out), *extra], check=True)
    wall = time.perf_counter() - t0
    res = RunResult.load(out / "report.json")
    stages = json.loads((out / "manifest.json").read_text())["stages"]

    import nncf
    import openvino as ov

    calib, evalset = open_calib_eval(DataConfig(root=str(default_data())))
    info = read_info(out / "fp32.onnx")
    spec = info.require_preprocess()
    x = calib.load(spec)
    t1 = time.perf_counter()
    q = nncf.quantize(ov.Core().read_model(str(out / "fp32.onnx")),
                      nncf.Dataset([{info.input_name: x[i:i + 8]} for i in range(0, len(x), 8)]),
                      preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(range(0, len(x), 8)))
    nncf_s = time.perf_counter() - t1
    tmp = Path(tempfile.mkdtemp(prefix="anchor-"))
    ov.save_model(q, str(tmp / "nncf.xml"), compress_to_fp16=False)

    models = {}
    for v in res.variants:
        if v.measured:
            models.setdefault(f"{v.name}@{v.target}", session_runner(out / v.file, target=v.target))
            for t, r in v.on.items():
                if r.bench is not None:
                    models[f"{v.name}@{t}"] = session_runner(out / v.file, target=t)
    models["nncf@openvino-cpu"] = session_runner(tmp / "nncf.xml", target="openvino-cpu")
    sample = evalset.subset(range(32)).load(spec)
    bench = benchmark_many(models, sample, BenchConfig(runs=args.runs, batch_sizes=(1, 32)))

    mask = sample_mask(evalset, args.sample)
    sub = evalset.subset(mask.nonzero()[0])
    sc = evaluate_many({"fp32": open_session(out / "fp32.onnx").run,
                        "nncf": open_session(tmp / "nncf.xml", target="openvino-cpu").run},
                       sub, spec, res.classes, EvalConfig(progress=False))
    ref, nm = sc["fp32"].result(), sc["nncf"].result()

    env = Environment(isa=cpu_isa())
    anchor = bench["nncf@openvino-cpu"].p50_ms
    rec = res.recommended
    print(f"\n{datetime.date.today()} {cpu_name()} ({env.isa_summary()}), {bench['fp32@ort-cpu'].threads} threads")
    flags = f"`qdeploy run --out {out} {args.run_args}`" if extra else f"`qdeploy run --out {out}` (no other flags)"
    search = out / "search.json"
    if search.is_file():
        flags += f" (auto search {json.loads(search.read_text())['seconds']:.1f} s)"
    print(f"{flags}: {wall:.1f} s wall; stages "
          + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in stages.items() if "seconds" in v and k != "total")
          + f"; recommended {rec.label if rec else 'FP32'}; NNCF quantize {nncf_s:.1f} s (not part of the run)")
    print("\n| deployment | top-1 % | drop pt | agreement % | images | b1 p50 ms | p99 ms | vs NNCF | img/s b32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    fp32 = res.fp32
    for k, b in bench.items():
        name, _, target = k.partition("@")
        if name == "nncf":
            m, base = nm, ref
        else:
            v = res.get(name)
            r = v.on.get(target) if v and target in v.on else None
            m = r.metrics if r is not None else v.metrics
            base = (r.reference if r is not None and r.reference is not None else fp32.metrics)
        mark = " (recommended)" if rec and k == f"{rec.variant}@{rec.target}" else ""
        agree = "–" if m.agreement is None else f"{100 * m.agreement:.2f}"
        print(f"| {k}{mark} | {100 * m.top1:.2f} | {100 * (base.top1 - m.top1):+.2f} | {agree} | {m.n} | "
              f"{b.p50_ms:.3f} | {b.p99_ms:.3f} | {b.p50_ms / anchor:.2f}x | {b.throughput.get(32, 0):.0f} |")
    print(f"\nnncf's quality: a {args.sample}-image stratified sample of the {len(evalset)} test images, drop against "
          f"ORT FP32 on those images (top-1 {100 * ref.top1:.2f} %); every other row from the run's report.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
