"""Peak RSS of `qdeploy run` (default variants) against the number of evaluation images.

Each run is its own process; its peak RSS comes from the kernel (wait4's ru_maxrss). Evaluation is
streamed, so the 10,000-image run should stay within 10 % (or 150 MB) of the 2,000-image run, at 32 px
(the shared ResNet18) and at 224 px (the bundled ResNet-20 on CIFAR-10 upscaled to 224x224).

    python bench/memory.py [--sizes 32,224] [--counts 2000,10000]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QDEPLOY = Path(sys.executable).with_name("qdeploy")
FAST_BENCH = ["--bench-runs", "20", "--bench-batches", "1", "--bench-seconds", "0.1"]


def command(size: int, count: int, out: Path) -> list[str]:
    if size == 32:
        return [str(QDEPLOY), "run", "--out", str(out), "--eval-limit", str(count), *FAST_BENCH]
    ckpt = REPO / "src/qdeploy/bundled/resnet20_cifar10/train/best.pth"
    return [str(QDEPLOY), "run", "--checkpoint", str(ckpt), "--size", str(size), "--override-preprocess",
            "--out", str(out), "--eval-limit", str(count), *FAST_BENCH]


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="32,224")
    ap.add_argument("--counts", default="2000,10000")
    args = ap.parse_args()
    sizes, counts = [int(s) for s in args.sizes.split(",")], [int(c) for c in args.counts.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            res = {c: peak_rss(command(size, c, Path(tmp) / f"s{size}_{c}")) for c in counts}
            base = res[counts[0]][0]
            for c in counts:
                mb, sec = res[c]
                ok = mb <= max(base * 1.10, base + 150)
                rows.append(f"| {size} | {c} | {mb:.0f} | {mb - base:+.0f} | {sec:.0f} | {'yes' if ok else 'NO'} |")
                print(rows[-1], flush=True)
    print("\n| input px | eval images | peak RSS MB | vs first | wall s | within 10 % / 150 MB |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
