"""Seed 004's study made honest: a 224-px EfficientNet-Lite0 through qdeploy, and ImageNet mode on photos.

    .venv/bin/python bench/seed004.py cifar     [--checkpoint runs/effl0/best.pth] [--out runs/seed004]
    .venv/bin/python bench/seed004.py imagenet  [--out runs/seed004_imagenet]

cifar: the model `qdeploy train --arch efficientnet-lite0 --pretrained imagenet --size 224` fine-tuned on
CIFAR-10, run as `qdeploy run --checkpoint ... --variants default,dynamic,seed-lab5,per-tensor --auto
--max-drop 0.5 --auto-methods minmax` on all 10,000 test images at 224 px (200 latency runs, throughput at batch 1 and 32). Prints
the seed-004 table (FAILED rows carry the agreement they reached), the auto search's outcome and the run's
peak RSS, read from the kernel (wait4) for the whole process.

imagenet: the ImageNet weights in ImageNet mode, label-free, on the 24 Kodak photos plus 1,000 CIFAR-10 test
images (100 per class, upscaled by the preprocessing), calibrated on 300 of 600 CIFAR-10 training images; the
other 300 are `--auto`'s label-free validation images, its budget `--max-drop` points of disagreement with FP32
(default 3: >= 97 % agreement), up to 8 fallback steps (activations kept float), then output tuning of the 2 closest candidates. The folders are symlinks in a temporary directory (nothing is copied).
Agreement, top-5 overlap, KL and rel-L2 are measured against FP32.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import QDEPLOY, peak_rss  # noqa: E402

from qdeploy.data import open_split  # noqa: E402
from qdeploy.data.sampling import balanced_indices  # noqa: E402
from qdeploy.report.tables import markdown_table  # noqa: E402
from qdeploy.results import RunResult  # noqa: E402
from qdeploy.settings import shared_dir  # noqa: E402

BENCH = ["--bench-runs", "200", "--bench-batches", "1,32", "--bench-seconds", "2"]


def imagenet_folders(root: Path, shared: Path) -> Path:
    """root/calib: 600 CIFAR-10 train images (300 calibration + 300 auto validation); root/eval: 24 Kodak photos +
    1,000 CIFAR-10 test images."""
    cifar = shared / "datasets" / "cifar10"
    for split, n, sub in (("train", 600, "calib"), ("test", 1000, "eval")):
        s = open_split(cifar, split)
        d = root / sub
        d.mkdir(parents=True)
        for i in balanced_indices(s.labels, n, seed=4):
            p = Path(s.paths[i])
            (d / f"cifar_{p.parent.name}_{p.name}").symlink_to(p)
    for p in sorted((shared / "datasets" / "kodak24").glob("*.png")):
        (root / "eval" / p.name).symlink_to(p)
    return root


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("cifar", "imagenet"))
    ap.add_argument("--checkpoint", default="runs/effl0/best.pth")
    ap.add_argument("--out")
    ap.add_argument("--variants", help="default: default,dynamic,seed-lab5,per-tensor (cifar); default,tuned,dynamic (imagenet)")
    ap.add_argument("--max-drop", help="auto's budget: top-1 points (cifar, default 0.5) or points of disagreement "
                    "with FP32 (imagenet, label-free, default 3)")
    ap.add_argument("--no-auto", action="store_true", help="only the listed variants (e.g. pt-ptq beside default)")
    ap.add_argument("--eval-limit", type=int, help="cifar: evaluate on this many test images (default all 10,000)")
    ap.add_argument("--auto-methods", default="minmax",
                    help="calibration methods auto sweeps (entropy/percentile: ~2.5 min per 100 images at 224 px here)")
    args = ap.parse_args()
    shared = shared_dir()
    if shared is None:
        raise SystemExit("bench/seed004.py needs ../shared (set QDEPLOY_SHARED)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.mode == "cifar":
            if not Path(args.checkpoint).is_file():
                raise SystemExit(f"{args.checkpoint} not found; train it first: qdeploy train --arch efficientnet-lite0 "
                                 "--pretrained imagenet --size 224 --data ../shared/datasets/cifar10 --out runs/effl0")
            out = Path(args.out or "runs/seed004")
            cmd = [str(QDEPLOY), "run", "--checkpoint", args.checkpoint, "--out", str(out), "--variants",
                   args.variants or "default,dynamic,seed-lab5,per-tensor", *BENCH]
            auto = ["--auto", "--max-drop", args.max_drop or "0.5", "--auto-methods", args.auto_methods]
            cmd += ["--eval-limit", str(args.eval_limit)] if args.eval_limit else []
        else:
            out = Path(args.out or "runs/seed004_imagenet")
            data = imagenet_folders(Path(tmp) / "imagenet_mode", shared)
            cmd = [str(QDEPLOY), "run", "--arch", "efficientnet-lite0", "--pretrained", "imagenet", "--data", str(data),
                   "--calib-split", "calib", "--eval-split", "eval", "--classes-file",
                   str(shared / "datasets" / "imagenet" / "imagenet_classes.txt"), "--out", str(out),
                   "--variants", args.variants or "default,tuned,dynamic", *BENCH]
            auto = ["--auto", "--max-drop", args.max_drop or "3", "--val-size", "300", "--auto-methods", args.auto_methods]
        cmd += [] if args.no_auto else auto
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        mb, sec = peak_rss(cmd)
    res = RunResult.load(out / "report.json")
    env = res.environment
    print(f"\nseed 004 ({args.mode}): {res.data.eval_images} evaluation images at {json.loads(res.data.preprocess)['size']} px, "
          f"{env.cpu}, {env.threads} threads, {env.runtime}; whole run {sec:.0f} s, "
          f"peak RSS {mb:.0f} MB")
    print(markdown_table(res))  # the report's own table: FAILED rows carry the agreement reached
    auto = next((v for v in res.variants if v.name == "auto"), None)
    if auto is not None and auto.facts.search is not None:
        s = auto.facts.search
        print(f"\nauto: {'met' if s.met_budget else 'did NOT meet'} the budget of {s.budget_pt} pt "
              f"({s.metric}); chosen {s.chosen}, FP32 nodes kept {s.fp32_nodes_kept}; {s.message or ''}")
        for k in s.sensitivity_by_kind:
            print(f"  {k.kind}: {k.nodes} nodes, mean added error {k.mean_added_error:.4f}, "
                  f"max {k.max_added_error:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
