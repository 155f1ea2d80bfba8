"""Accuracy-aware auto-quantization: the fastest INT8 recipe that meets the accuracy budget here.

1. Speed screen: each (format, activation type) with MinMax; dominated ones (slower than FP32, or
   far slower than the fastest) are dropped before any calibration sweep.
2. Accuracy sweep on the survivors: calibration method, per-channel/per-tensor, calibration size.
3. Fallback when nothing meets the budget: rank the quantized activations by what each costs the output alone
   (classifier) or the nodes by the error they add (image-to-image), keep the worst float one at a time
   (re-measuring each step) until the budget holds or the steps run out.
Selection uses a validation split carved from the calibration split, never the test split.
"""
from __future__ import annotations

import importlib.metadata as md
import itertools
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from ..artifacts import write_json, write_onnx
from ..bench import BenchConfig, benchmark_many, session_runner
from ..compare import compare_outputs
from ..data import open_calib_val
from ..errors import QDeployError, QuantizeError
from ..graph.attention import has_attention
from ..plotting import pyplot, save_png
from ..recipes import WIDE_KERNELS, AutoConfig, QuantConfig, kernel_types
from ..results import SearchSummary, TargetPick, VariantFacts
from ..targets import DEFAULT_TARGET, get_target, open_session, run_batched
from ..tasks import QuantCheck
from ..tasks.image import COLLAPSE_PSNR_DB, ImageScorer
from .base import VariantContext, refuse, register
from .ort import quantize, verify
from .sensitivity import by_kind, node_errors, node_sensitivity, tensor_errors, tensor_sensitivity

TIE = 0.05   # latencies within 5 % of each other are a tie: the better quality is picked
# a candidate's first (short) timing against another target's confirmed pick: within this factor it is scored, as one
# short timing on a shared 2-core machine can be off by a fifth; beyond it, it cannot become the run's pick
BAR_SLACK = 1.25
# the recipe fields that decide a file's ops (and so its latency); calibration, rounding and bias only change values
GRAPH_FIELDS = ("mode", "format", "activation_type", "weight_type", "reduce_range", "per_channel", "op_types",
                "float_outputs", "tune_epochs")


@dataclass
class Candidate:
    name: str
    config: dict
    calib_size: int
    val_top1: float | None = None
    ref_top1: float | None = None    # FP32's top-1 on the same images (the candidate's drop is against it)
    images: int | None = None        # validation images scored on (a class-balanced prefix); None: not scored
    agreement: float | None = None
    rel_l2: float | None = None      # ||logits - FP32 logits|| / ||FP32 logits|| on the validation images
    psnr: float | None = None        # image-to-image: mean / worst PSNR (dB) and mean SSIM vs FP32's outputs
    psnr_min: float | None = None
    ssim: float | None = None
    p50_ms: float | None = None      # on the search's FP32 scale (ORT FP32 timed beside it), on `target`
    target: str = DEFAULT_TARGET
    screen_p50_ms: float | None = None   # the first, short timing; p50_ms is the confirmed one once re-timed
    confirmed: bool = False
    size_bytes: int | None = None
    excluded: list[str] = field(default_factory=list)
    stage: str = ""
    status: str = "ok"
    note: str = ""
    seconds: float = 0.0


class _Search:
    """The search's bookkeeping; what "good" means is the task's: top-1 drop (or disagreement) for a classifier
    (this class), PSNR against FP32's output images for an image-to-image model (_ImageSearch)."""

    def __init__(self, fp32: Path, work: Path, calib_pool: np.ndarray, val_x, val_y, cfg: AutoConfig, log,
                 target: str = DEFAULT_TARGET, like: "_Search | None" = None,
                 bar: "tuple[str, float] | None" = None):
        """like: a search on another target of the same run, whose ORT FP32 outputs and latency this one reuses
        (one reference, so every target's latencies are on the same FP32 scale). bar: (target, p50 ms) of the
        fastest pick of the targets searched before; a candidate here more than BAR_SLACK times slower than it cannot
        be the run's pick, so it is not scored."""
        self.bar = bar
        self.fp32, self.work, self.pool, self.val_x, self.val_y, self.cfg, self.log = fp32, work, calib_pool, val_x, val_y, cfg, log
        self.target = target
        self.tag = "" if target == DEFAULT_TARGET else f"@{target}"   # candidate names: c03, c03@openvino-cpu
        self.ref_logits = like.ref_logits if like else run_batched(open_session(fp32), val_x)
        self._reference()
        # Validation images come from the training split. When FP32 gets (almost) all of them right, the
        # model has memorised them and a top-1 drop there says nothing; the share of images where INT8
        # and FP32 disagree is then the measure, an upper bound on the drop (a disagreement can cost
        # at most one correct prediction).
        self.fp32_ms = like.fp32_ms if like else self._bench({"fp32": fp32})["fp32"].p50_ms
        self.cands: list[Candidate] = []
        self.tensor_sens: list[dict] = []   # filled when the classifier fallback runs (sensitivity.tensor_sensitivity)
        # node sensitivity is measured in ONNX Runtime on the base candidate's QDQ twin, whichever target is
        # searched: a second target with the same base reuses the first one's rows (one entry per recipe)
        self.sens_cache: dict[str, list[dict]] = like.sens_cache if like else {}
        # the same recipe on the same images is the same file: another target's search copies it, not rebuilds it
        self.built: dict[str, Path] = like.built if like else {}
        self.confirmed_ms: dict[str, float] = {}   # graph -> confirmed latency on this target (confirm)

    def _reference(self) -> None:
        # Label-free validation images (a plain photo folder, e.g. ImageNet mode): no top-1 to drop, so the budget
        # is on disagreement with FP32, which bounds the drop on any labelled set of such images from above.
        if self.val_y is None:
            if self.cfg.max_drop_pt is None:
                raise QuantizeError("--auto on label-free images needs a budget in points of disagreement with FP32 "
                                    "(--max-drop 3 = at least 97 % agreement); --max-rel-drop needs labels")
            self.fp32_top1, self.metric = None, "disagreement"
            return
        self.fp32_top1 = float((self.ref_logits.argmax(1) == self.val_y).mean())
        self.metric = "disagreement" if self.fp32_top1 >= self.cfg.memorized_at else "top1-drop"

    @property
    def label_free(self) -> bool:
        return self.val_y is None

    def score(self, c: Candidate, outputs: np.ndarray) -> None:
        """Scores on the first len(outputs) validation images, against FP32 on the same images."""
        n = len(outputs)
        if not self.label_free:
            c.val_top1 = float((outputs.argmax(1) == self.val_y[:n]).mean())
            c.ref_top1 = float((self.ref_logits[:n].argmax(1) == self.val_y[:n]).mean())
        d = compare_outputs(self.ref_logits[:n], outputs)
        c.agreement, c.rel_l2 = d.agreement, d.rel_l2

    def collapsed(self, c: Candidate) -> str | None:
        if c.agreement < self.cfg.collapse_agreement:
            return f"agreement with FP32 {c.agreement:.1%}: never selected"
        return None

    def quality(self, c: Candidate) -> str:
        top1 = "" if self.label_free else f"val top-1 {100 * c.val_top1:.2f} % (FP32 {100 * self.fp32_top1:.2f}), "
        return f"{top1}agreement {100 * c.agreement:.2f} %, {self.metric} {self.drop_pt(c):.2f} pt"

    def good_enough(self, c: Candidate, budget: float) -> bool:
        return self.drop_pt(c) <= budget + 1e-9

    def budget(self) -> float:
        return self.cfg.max_drop_pt if self.label_free else self.cfg.budget_pt(self.fp32_top1)

    def reference_facts(self) -> dict:
        return {"fp32_val_top1": self.fp32_top1, "label_free": self.label_free}

    def _bench(self, models: dict, runs: int | None = None):
        return benchmark_many(models, self.val_x[:8], BenchConfig(runs=runs or self.cfg.bench_runs, warmup=10,
                                                                  batch_sizes=(1,), min_seconds=0.0, min_iters=1))

    def _latencies(self, cands: list[Candidate], runs: int | None = None) -> None:
        """Timings of built candidates on the search's target, interleaved in one run beside ORT FP32 and expressed
        on the FP32 reference's scale, so that drift of a shared machine does not reorder them (timed one after
        another, a minute apart on a shared 2-core machine, the kernels' order changed between two runs of the same
        search) and searches on different targets compare. A file the target cannot run fails here."""
        runners = {}
        for c in cands:
            try:
                runners[c.name] = session_runner(self.work / f"{c.name}.onnx", target=self.target)
            except QDeployError as exc:
                c.status, c.note = "failed", str(exc)
                self.log(f"auto {c.name}: failed on {self.target}: {str(exc)[:160]}")
        if runners:
            r = self._bench({"fp32": self.fp32, **runners}, runs)
            for c in cands:
                if c.name in runners:
                    c.p50_ms = self.fp32_ms * r[c.name].p50_ms / r["fp32"].p50_ms

    def measure(self, qcfg: QuantConfig, calib_size: int, stage: str, latency: float | None = None,
                cheap: bool = False, images: int | None = None, could_win: bool = False) -> Candidate:
        """Build, time and score one candidate. cheap: nearest rounding and no bias correction (the speed screen's
        build: the same graph and ops as the full recipe, so the same latency, in a fraction of the time).
        images: score on the first this many validation images (a class-balanced prefix) instead of all.
        could_win: time first and leave a candidate that cannot be picked (not faster than FP32, or slower than
        what another target already picked) unscored, status "dominated"."""
        c = self.build(qcfg, calib_size, stage, cheap)
        if latency is not None and c.status == "ok":
            c.p50_ms = latency
        else:
            self.clock(c)
        if c.status != "ok":
            return c
        why = self.cannot_win(c) if could_win else None
        if why:
            self.dominate(c, why)
        else:
            self.evaluate(c, images)
        return c

    def build(self, qcfg: QuantConfig, calib_size: int, stage: str, cheap: bool = False) -> Candidate:
        """Quantize one candidate into the work folder (or copy the same recipe's file built for another target)."""
        name = f"c{len(self.cands):02d}{self.tag}"
        full = qcfg.mode == "static" and not cheap
        qcfg = qcfg.with_(bias_correction=self.cfg.bias_correction and full,
                          weight_rounding=self.cfg.weight_rounding if full else "nearest")
        c = Candidate(name=name, config=qcfg.as_dict(), calib_size=calib_size, excluded=list(qcfg.nodes_to_exclude),
                      stage=stage, target=self.target)
        t0 = time.perf_counter()
        path = self.work / f"{name}.onnx"
        key = json.dumps({**qcfg.as_dict(), "name": "", "calib": calib_size}, sort_keys=True, default=str)
        try:
            if key in self.built and self.built[key].is_file():
                shutil.copyfile(self.built[key], path)
            else:
                quantize(self.fp32, path, qcfg.with_(min_agreement=0.0), self.pool[:calib_size],
                         verify_batch=self.val_x[:64], guard=False)
                self.built[key] = path
            c.size_bytes = path.stat().st_size
        except QDeployError as exc:
            c.status, c.note = "failed", str(exc)
        c.seconds = time.perf_counter() - t0
        self.cands.append(c)
        return c

    def clock(self, c: Candidate) -> None:
        """The screen timing of a built candidate (a file the target cannot run fails here, with its reason)."""
        if c.status == "ok":
            self._latencies([c])

    def evaluate(self, c: Candidate, images: int | None = None) -> None:
        """Score a built candidate on the first `images` validation images (all when None or more)."""
        t0 = time.perf_counter()
        n = len(self.val_x) if images is None else min(images, len(self.val_x))
        try:
            self.score(c, run_batched(open_session(self.work / f"{c.name}.onnx", target=self.target), self.val_x[:n]))
        except QDeployError as exc:
            c.status, c.note = "failed", str(exc)
            return
        c.images = n
        c.seconds += time.perf_counter() - t0
        why = self.collapsed(c)
        if why:
            c.status, c.note = "collapsed", why
            self.log(f"auto {c.name}: COLLAPSED ({c.note})")
            return
        part = "" if n == len(self.val_x) else f" (first {n} of {len(self.val_x)} validation images)"
        self.log(f"auto {c.name} [{c.stage}] {_describe(QuantConfig(**c.config), c.calib_size)}: {self.quality(c)}"
                 f"{part}, {c.p50_ms:.2f} ms")

    def cannot_win(self, c: Candidate) -> str | None:
        """Why a timed candidate cannot be picked, whatever its quality: not faster than FP32, or clearly slower
        (BAR_SLACK) than the pick of a target searched before this one (the run deploys the fastest of them)."""
        if c.p50_ms >= self.fp32_ms:
            return f"not faster than FP32 ({c.p50_ms:.2f} vs {self.fp32_ms:.2f} ms)"
        if self.bar is not None and c.p50_ms > self.bar[1] * BAR_SLACK:
            return f"slower than the pick on {self.bar[0]} ({c.p50_ms:.2f} vs {self.bar[1]:.2f} ms)"
        return None

    def dominate(self, c: Candidate, why: str) -> None:
        c.status, c.note = "dominated", f"{why}: not scored"
        self.log(f"auto {c.name} [{c.stage}] {_describe(QuantConfig(**c.config), c.calib_size)}: {c.p50_ms:.2f} ms, "
                 f"{c.note}")

    def drop_pt(self, c: Candidate) -> float:
        if self.metric == "disagreement":
            return 100 * (1 - c.agreement)
        return 100 * ((self.fp32_top1 if c.ref_top1 is None else c.ref_top1) - c.val_top1)

    def meets(self, c: Candidate, budget: float) -> bool:
        if not (c.status == "ok" and self.good_enough(c, budget) and c.p50_ms < self.fp32_ms):
            return False
        self.confirm(c)
        return c.p50_ms < self.fp32_ms

    def confirm(self, c: Candidate) -> None:
        """Re-time a candidate that looks good enough and faster than FP32, with 3x the runs, before it can be
        chosen: one short timing on a shared 2-core machine can be off by a third (seen: a style-network
        candidate at 92 ms in the screen, 134-138 ms in every other timing, FP32 114 ms)."""
        if c.confirmed:
            return
        c.screen_p50_ms, c.confirmed = c.p50_ms, True
        # calibration, rounding and bias values do not change the ops a file runs: one confirmed timing per graph
        key = json.dumps({k: c.config.get(k) for k in GRAPH_FIELDS} | {"excluded": sorted(c.excluded)},
                         sort_keys=True, default=str)
        if key in self.confirmed_ms:
            c.p50_ms = self.confirmed_ms[key]
        else:
            self._latencies([c], runs=3 * self.cfg.bench_runs)
            self.confirmed_ms[key] = c.p50_ms
        if c.p50_ms >= self.fp32_ms:
            c.note = (c.note + "; " if c.note else "") + (f"re-timed at {c.p50_ms:.2f} ms (screen {c.screen_p50_ms:.2f}): "
                                                          f"not faster than FP32 ({self.fp32_ms:.2f} ms)")
            self.log(f"auto {c.name}: {c.note}")


class _ImageSearch(_Search):
    """Image-to-image: a candidate is good when its mean PSNR against FP32's output images reaches
    cfg.min_psnr and its worst image cfg.min_worst_psnr; "drop" (for ranking and the record) is the
    shortfall below the mean floor, negative when above it."""

    def _reference(self) -> None:
        self.metric = "psnr"

    def score(self, c: Candidate, outputs: np.ndarray) -> None:
        sc = ImageScorer(with_reference=True)
        sc.update(outputs, None, self.ref_logits[:len(outputs)])
        m = sc.result()
        c.psnr, c.psnr_min, c.ssim = m.psnr_mean, m.psnr_min, m.ssim_mean

    def collapsed(self, c: Candidate) -> str | None:
        if c.psnr < COLLAPSE_PSNR_DB:
            return f"mean PSNR vs FP32 {c.psnr:.1f} dB (< {COLLAPSE_PSNR_DB:.0f}): never selected"
        return None

    def quality(self, c: Candidate) -> str:
        return f"PSNR vs FP32 {c.psnr:.2f} dB (worst {c.psnr_min:.2f}), SSIM {c.ssim:.4f}"

    def drop_pt(self, c: Candidate) -> float:
        if self.cfg.min_psnr is None:
            return 100 * (self.cfg.min_ssim - c.ssim)
        return self.cfg.min_psnr - c.psnr

    def good_enough(self, c: Candidate, budget: float) -> bool:
        cfg = self.cfg
        psnr_ok = cfg.min_psnr is None or (c.psnr >= cfg.min_psnr - 1e-9 and c.psnr_min >= cfg.min_worst_psnr - 1e-9)
        return psnr_ok and (cfg.min_ssim is None or c.ssim >= cfg.min_ssim - 1e-9)

    def budget(self) -> float:
        return 0.0

    def floors(self) -> str:
        cfg = self.cfg
        parts = ([f"mean PSNR >= {cfg.min_psnr} dB, worst image >= {cfg.min_worst_psnr} dB"] if cfg.min_psnr is not None
                 else []) + ([f"mean SSIM >= {cfg.min_ssim}"] if cfg.min_ssim is not None else [])
        return " and ".join(parts)

    def reference_facts(self) -> dict:
        return {"min_psnr": self.cfg.min_psnr, "min_worst_psnr": self.cfg.min_worst_psnr,
                "min_ssim": self.cfg.min_ssim, "floors": self.floors()}


def _describe(q: QuantConfig, n: int) -> str:
    ex = f", {len(q.nodes_to_exclude)} nodes FP32" if q.nodes_to_exclude else ""
    ex += f", only {'/'.join(q.op_types)}" if q.op_types else ""
    ex += f", float {'/'.join(q.float_outputs)} outputs" if q.float_outputs else ""
    ex += f", output-tuned {q.tune_epochs} epochs" if q.tune_epochs else ""
    return (f"{q.format} {q.activation_type}/{q.weight_type}{' 7-bit' if q.reduce_range else ''} {'per-channel' if q.per_channel else 'per-tensor'} "
            f"{q.method} calib {n}{ex}")


def _best(s: _Search, pool: list[Candidate], budget: float, tie: float = TIE) -> Candidate | None:
    """Among candidates within `tie` of the fastest that meet the budget: the smallest drop, then the most faithful
    outputs (rel-L2 vs FP32). On validation images the model has memorised (metric "disagreement"), drops are
    0-1 images of 2,000 and say little, so faithfulness ranks first: measured on the shared ResNet18, a per-tensor
    candidate picked for 0 disagreements there agreed with FP32 on 99.26 % of the test images, the per-channel
    default on 99.64 %."""
    # re-timed (confirmed) fastest first; one slower than dominated_ratio x the fastest confirmed cannot win
    ok = []
    # a candidate scored on a prefix of the validation images only (the speed screen's) is not a pick
    whole = [c for c in pool if c.status == "ok" and c.images is not None and c.images >= len(s.val_x)]
    for c in sorted((c for c in whole if s.good_enough(c, budget) and c.p50_ms < s.fp32_ms), key=lambda c: c.p50_ms):
        if ok and not c.confirmed and c.p50_ms > min(x.p50_ms for x in ok) * s.cfg.dominated_ratio:
            c.note = c.note or f"not re-timed: {c.p50_ms:.2f} ms, far slower than the fastest within the budget"
            continue
        if s.meets(c, budget):
            ok.append(c)
    if not ok:
        return None
    fastest = min(c.p50_ms for c in ok)

    def key(c):
        faithful = c.rel_l2 if c.rel_l2 is not None else 0.0
        return (faithful, c.p50_ms) if s.metric == "disagreement" else (s.drop_pt(c), faithful, c.p50_ms)

    return min([c for c in ok if c.p50_ms <= fastest * (1 + tie)], key=key)


def auto_quantize_from(fp32: str | Path, out: str | Path, data, cfg: AutoConfig, log=print) -> dict:
    """`auto_quantize` on images from a DataConfig's calibration split: the run's own calibration images
    (--calib-size of them, the largest size swept) and a disjoint validation set (--val-size), both decoded
    once and held as uint8 (normalised batch by batch) for the whole search; the evaluation split stays for
    the final report."""

    calib, val = open_calib_val(data, cfg.val_size)
    log(f"auto: {len(calib)} calibration and {len(val)} validation images from {val.source} (disjoint from each "
        "other and from the evaluation images)")
    return auto_quantize(fp32, out, calib.inputs(data.preprocess), val.inputs(data.preprocess), val.labels, cfg, log)


def auto_quantize(fp32: str | Path, out: str | Path, calib_pool: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                  cfg: AutoConfig | None = None, log=print) -> dict:
    """Search on each of cfg.targets, write the chosen model to `out` and `search.json` beside it; returns the
    search record. With several targets the pick is the fastest chosen candidate across them (latencies are
    all on the ORT FP32 scale), and the record names the target it was timed and scored on."""
    cfg = cfg or AutoConfig()
    fp32, out = Path(fp32), Path(out)
    t_start = time.perf_counter()
    work = out.parent / ".auto-work"
    work.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for target in cfg.targets:
        kind = _ImageSearch if cfg.image else _Search
        picks = [(o[0].target, o[1].p50_ms) for o in outcomes if o[1] is not None]
        s = kind(fp32, work, calib_pool, val_x, val_y, cfg, log, target=target,
                 like=outcomes[0][0] if outcomes else None, bar=min(picks, key=lambda p: p[1]) if picks else None)
        if len(cfg.targets) > 1:
            log(f"auto: searching on {target}")
        outcomes.append((s, *(_image_search(s) if cfg.image else _classify_search(s))))
    picked = [o for o in outcomes if o[1] is not None]
    best = min(picked, key=lambda o: o[1].p50_ms) if picked else outcomes[0]
    return _finish(outcomes, best, out, cfg, time.perf_counter() - t_start)


def _classify_search(s: "_Search") -> tuple[Candidate | None, float, list[dict]]:
    """Classification: speed screen, accuracy sweep on the survivors, sensitivity fallback. (chosen, budget,
    sensitivity)."""
    log, budget = s.log, s.budget()
    _log_budget(s, budget)
    sizes = s.cfg.calib_sizes(len(s.pool))
    log(f"auto: calibration sizes {', '.join(map(str, sizes))} (fractions of the {len(s.pool)} calibration images)")
    keep = _speed_screen(s, max(sizes))
    _accuracy_sweep(s, keep, sizes)
    chosen = _best(s, s.cands, budget)
    ok = [c for c in s.cands if c.status == "ok" and (c in keep or c.stage == "accuracy")]
    base = chosen or (min(ok, key=lambda c: (s.drop_pt(c), c.p50_ms)) if ok else None)
    # node sensitivity steers the fallback (and builds the probe its activation ranking runs on); with a pick it is
    # only an explanation for the report, measured when asked (cfg.explain): ~50 s of a ResNet18 search here
    sens = _sensitivity(s, base) if base and (chosen is None or s.cfg.explain) else []
    if sens:
        log("auto: most sensitive nodes: " + ", ".join(f"{r['node']} (+{r['added_error']:.3f})" for r in sens[:5]))
    if chosen is None and base is not None:
        # the fallback follows the activations, not the nodes: a node's local error misses what a tensor costs
        # downstream (EfficientNet-Lite0's stem output: tiny local error, the largest end-to-end cost), and
        # leaving one node unquantized keeps its input quantized for its neighbours
        s.tensor_sens = tensor_sensitivity(s.fp32, s.work / "sensitivity.onnx", s.val_x[:s.cfg.tensor_sens_images])
        log("auto: no candidate meets the budget; keeping the costliest activations float, one per step: "
            + ", ".join(f"{r['tensor']} ({r['output_rel_error']:.4f})" for r in s.tensor_sens[:5]))
        chosen = _tensor_fallback(s, base, s.tensor_sens, budget)
    if chosen is None:
        chosen = _tuning(s, budget)
    return chosen, budget, sens


def _log_budget(s: "_Search", budget: float) -> None:
    if s.label_free:
        s.log(f"auto: {len(s.val_x)} label-free validation images: budget {budget:.2f} pt of disagreement with FP32 "
              f"(agreement >= {100 - budget:.2f} %), FP32 {s.fp32_ms:.2f} ms")
    else:
        s.log(f"auto: FP32 val top-1 {100 * s.fp32_top1:.2f} % on {len(s.val_y)} validation images, budget "
              f"{budget:.2f} pt, FP32 {s.fp32_ms:.2f} ms")
    if s.metric == "disagreement" and not s.label_free:
        s.log(f"auto: FP32 gets {100 * s.fp32_top1:.1f} % of the validation images right (seen in training): the "
              "budget applies to INT8/FP32 disagreement instead, an upper bound on the top-1 drop")


def _speed_screen(s: "_Search", base_n: int) -> list[Candidate]:
    """Every (format, integer kernel) with MinMax; the fastest non-dominated one is kept, and the most accurate one
    too when that is another (a kernel that saturates on this CPU is fast and useless)."""
    cfg = s.cfg
    scopes = [{}]
    if has_attention(s.fp32) and "QDQ" in cfg.formats:
        # a transformer: the matrix products' inputs alone, as the `transformer` preset (recipes.QuantConfig)
        t = QuantConfig.transformer()
        scopes.append({"op_types": t.op_types, "float_outputs": t.float_outputs})
        s.log("auto: the graph has attention: QDQ candidates are also screened on MatMul/Gemm inputs alone "
              "(LayerNorm, Softmax, GELU, adds float)")
    # time first (all together, interleaved), then score in order of speed: a candidate dominated by a faster one
    # that did not collapse (or not faster than FP32, or than another target's pick) is left unscored; the rest are
    # scored on a prefix of the validation images (enough to find the most accurate kernel and a saturating one),
    # the kept ones on all
    screen = [s.build(QuantConfig(name="auto", format=f, **kernel_types(k), **scope), base_n, "speed",
                      cheap=cfg.cheap_screen)
              for f, k in itertools.product(cfg.formats, cfg.kernels) for scope in scopes if not scope or f == "QDQ"]
    s._latencies([c for c in screen if c.status == "ok"])
    fastest = None
    for c in sorted((c for c in screen if c.status == "ok"), key=lambda c: c.p50_ms):
        why = s.cannot_win(c) or (None if fastest is None or c.p50_ms <= fastest * cfg.dominated_ratio else
                                  f"dominated: {c.p50_ms:.2f} ms vs fastest {fastest:.2f} ms")
        if why:
            s.dominate(c, why)
            continue
        s.evaluate(c, cfg.screen_images)
        if c.status == "ok" and fastest is None:
            fastest = c.p50_ms
    live = [c for c in screen if c.status == "ok"]
    keep = sorted(live, key=lambda c: c.p50_ms)[:1]
    most_accurate = min(live, key=lambda c: (s.drop_pt(c), c.p50_ms), default=None)
    if cfg.keep_most_accurate and most_accurate is not None and most_accurate not in keep:
        keep.append(most_accurate)
    if cfg.cheap_screen and _full_recipe_costs(cfg):
        # the kept kernels rebuilt with the full recipe (GPTQ, bias correction), their screen latency reused
        full = [s.measure(QuantConfig(**{**c.config, "name": "auto"}), base_n, "kept", latency=c.p50_ms)
                for c in keep if c.config["mode"] == "static"]
        for c in keep:
            c.note = c.note or "screen build (nearest rounding, no bias correction); rebuilt with the full recipe"
        keep = [c for c in full if c.status == "ok"] + [c for c in keep if c.config["mode"] != "static"]
    for c in keep:
        if c.images is not None and c.images < len(s.val_x):
            s.evaluate(c)   # kept: scored on every validation image
    keep = [c for c in keep if c.status == "ok"]
    for c in live:
        if c not in keep:
            c.note = c.note or (f"not swept: neither the fastest nor the most accurate kernel ({c.p50_ms:.2f} ms, "
                                f"{s.metric} {s.drop_pt(c):.2f} pt)")
    return keep


def _accuracy_sweep(s: "_Search", keep: list[Candidate], sizes: list[int]) -> None:
    """On the kept formats, coordinate-wise instead of a full grid: calibration method x weight granularity first,
    then calibration size for the best of those. Latency is re-measured only when the graph changes (per-tensor
    weights); calibration does not change it.

    Raced (cfg.race_sweep, with a full recipe that costs more than the cheap one): every sweep point is built the
    cheap way (nearest rounding, no bias correction) and scored on the screen's prefix of the validation images
    beside the cheap build of the kept kernel itself, so that like is ranked against like; the winner is scored on
    every image and, when it is not the kept candidate's own recipe, rebuilt with GPTQ and bias correction (most
    of a build's time). A build, not scoring, is what a sweep point costs unraced (16-36 s each on an AVX2 EPYC)."""
    base_n = max(sizes)
    race = s.cfg.race_sweep and _full_recipe_costs(s.cfg)

    def rank(c):
        return s.drop_pt(c), c.rel_l2 or 0.0, c.p50_ms

    for k in keep:
        fmt = {f: k.config[f] for f in ("format", "activation_type", "weight_type", "reduce_range", "op_types",
                                        "float_outputs")}
        race_k = race and k.config["mode"] == "static"
        # raced: the kept kernel's own cheap build (copied from the screen's), on the same prefix as the others
        part = s.cfg.screen_images if race_k else None
        sweep = [s.measure(QuantConfig(**{**k.config, "name": "auto"}), base_n, "accuracy", latency=k.p50_ms,
                           cheap=True, could_win=True, images=part) if race_k else k]
        for method, pc in itertools.product(s.cfg.methods, s.cfg.per_channel):
            if (method, pc) != ("minmax", True):
                sweep.append(s.measure(QuantConfig(name="auto", per_channel=pc, method=method, **fmt), base_n,
                                       "accuracy", latency=k.p50_ms if pc else None, could_win=True, cheap=race_k,
                                       images=part))
        ok = [c for c in sweep if c.status == "ok"]
        best = min(ok, key=rank) if ok else None
        for n in (n for n in sizes if best and n != base_n):
            c = s.measure(QuantConfig(**{**best.config, "name": "auto"}), n, "accuracy", latency=best.p50_ms,
                          could_win=True, cheap=race_k, images=part)
            if c.status == "ok":
                ok.append(c)
        if not race_k or not ok:
            continue
        for c in ok:
            c.note = c.note or "race build (nearest rounding, no bias correction)"
        win = min(ok, key=rank)
        s.evaluate(win)   # the winner on every validation image (a pick is never judged on a prefix)
        if _recipe(win) == _recipe(k):
            win.note = "race winner: the kept candidate's own recipe (built with the full recipe already)"
            continue
        full = s.measure(QuantConfig(**{**win.config, "name": "auto"}), win.calib_size, "accuracy",
                         latency=win.p50_ms)
        win.note = f"race winner: rebuilt with the full recipe as {full.name}"


def _recipe(c: Candidate) -> tuple:
    """A candidate's recipe without how it was built (cheap or full): what a race point and its full twin share."""
    return {k: v for k, v in c.config.items() if k not in ("bias_correction", "weight_rounding")}, c.calib_size


def _full_recipe_costs(cfg: AutoConfig) -> bool:
    """The full recipe differs from the cheap build (GPTQ or bias correction on): only then is a cheap race worth it."""
    return cfg.bias_correction or cfg.weight_rounding != "nearest"


def _tuning(s: _Search, budget: float) -> Candidate | None:
    """The closest QDQ candidates faster than FP32 again, output-tuned (INT32 biases and activation scales fitted
    to FP32's outputs on their calibration images; the same graph and integer weights, so the same speed, measured
    again all the same), closest first; the first that meets the budget is chosen."""
    if not (s.cfg.tune_epochs and s.cfg.tune_candidates):
        return None
    # QDQ candidates only: a QOperator candidate's QDQ twin runs other kernels (measured on a VNNI CPU: QOperator
    # u8u8 5.0 ms, its QDQ twin 37-57 ms, FP32 14.9 ms), so tuning it would not tune what was fast
    # and built with the search's recipe (the tuned file is: a cheap screen build is not the file it would tune)
    ok = sorted((c for c in s.cands if c.status == "ok" and c.p50_ms < s.fp32_ms and c.config.get("mode") == "static"
                 and c.config.get("format") == "QDQ" and c.config.get("weight_rounding") == s.cfg.weight_rounding
                 and c.config.get("bias_correction") == s.cfg.bias_correction),
                key=lambda c: (s.drop_pt(c), c.p50_ms))
    seen, picks = set(), []
    for c in ok:
        key = (c.config["activation_type"], c.config["weight_type"], c.config["per_channel"], c.config["method"],
               tuple(c.excluded), c.calib_size)
        if key not in seen:
            seen.add(key)
            picks.append(c)
    if picks:
        s.log(f"auto: nothing within the budget; output tuning the {min(len(picks), s.cfg.tune_candidates)} closest "
              f"({', '.join(c.name for c in picks[:s.cfg.tune_candidates])}), {s.cfg.tune_epochs} epochs each")
    for c in picks[: s.cfg.tune_candidates]:
        t = s.measure(QuantConfig(**c.config).with_(tune_epochs=s.cfg.tune_epochs), c.calib_size,
                      "tuning")
        t.note = (t.note + "; " if t.note else "") + f"{c.name} output-tuned"
        if s.meets(t, budget):
            return t
    return None


def _image_search(s: "_ImageSearch") -> tuple[Candidate | None, float, list[dict]]:
    """Image-to-image: screen (format x kernel x quantized op types), sweep calibration on the best, keep the
    first/last convolutions in FP32 (seed 003's rule of thumb), then the most sensitive nodes one by one.
    Nothing is dropped for being slow before the quality steps: on a CPU where every INT8 graph of a model
    is slower than FP32, the record still says what quality INT8 can reach and at what cost."""
    cfg, log = s.cfg, s.log
    log(f"auto: image-to-image budget {s.floors()} vs FP32 on {len(s.val_x)} validation images; "
        f"FP32 {s.fp32_ms:.2f} ms")
    n = max(cfg.calib_sizes(len(s.pool)))
    for f, k, (ops, float_out) in itertools.product(cfg.formats, cfg.kernels, cfg.image_op_types):
        if k in WIDE_KERNELS and (f != "QDQ" or not ops or float_out):
            continue  # 16-bit activations: QDQ only, on the Conv nodes (the quality reference)
        if float_out and f != "QDQ":
            continue  # QOperator's QLinearConv always writes a quantized output
        s.measure(QuantConfig(name="auto", format=f, op_types=ops, float_outputs=float_out, **kernel_types(k)), n,
                  "speed")
    eight = [c for c in s.cands if c.status == "ok" and c.config["activation_type"] in ("uint8", "int8")]
    base = max(eight, key=lambda c: (c.psnr, -c.p50_ms), default=None)
    if base is not None:
        fields_ = {k: base.config[k] for k in ("format", "activation_type", "weight_type", "reduce_range", "op_types",
                                               "float_outputs")}
        for method, pc in itertools.product(cfg.methods, cfg.per_channel):
            if (method, pc) != ("minmax", True):
                s.measure(QuantConfig(name="auto", per_channel=pc, method=method, **fields_), n, "accuracy",
                          latency=base.p50_ms if pc else None)
        eight = [c for c in s.cands if c.status == "ok" and c.config["activation_type"] in ("uint8", "int8")]
        base = max(eight, key=lambda c: (c.psnr, -c.p50_ms))
    chosen = _best(s, s.cands, 0.0)
    sens = _sensitivity(s, base) if base and (chosen is None or cfg.explain) else []
    if chosen is None and base is not None:
        ends = _end_convs(s.fp32)
        log(f"auto: keeping the first and last convolutions in FP32 ({', '.join(ends)})")
        c = s.measure(QuantConfig(**{**base.config, "nodes_to_exclude": ends}), base.calib_size, "fallback")
        if s.meets(c, 0.0):
            chosen = c
        elif sens:
            start = ends if c.status == "ok" and c.psnr > base.psnr else []
            log("auto: keeping the most sensitive nodes in FP32, one per step"
                + (" (besides the first and last convolutions)" if start else ""))
            chosen = _fallback(s, base, [r for r in sens if r["node"] not in start], 0.0, start)
    return chosen, 0.0, sens


def _end_convs(fp32: Path) -> list[str]:
    convs = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node if n.op_type == "Conv"]
    return list(dict.fromkeys(convs[:1] + convs[-1:]))


def _image_message(s: "_ImageSearch") -> str:
    """Why nothing was chosen, in numbers: the speed wall, the best quality, the fastest that met the floors."""
    ok = [c for c in s.cands if c.status == "ok"]
    if not ok:
        return "every candidate failed"
    fastest = min(ok, key=lambda c: c.p50_ms)
    best = max(ok, key=lambda c: c.psnr)
    good = [c for c in ok if s.good_enough(c, 0.0)]
    parts = []
    if fastest.p50_ms >= s.fp32_ms:
        parts.append(f"no INT8 candidate is faster than FP32 on this machine (fastest {fastest.name}: "
                     f"{fastest.p50_ms:.1f} ms vs FP32 {s.fp32_ms:.1f} ms, {fastest.psnr:.1f} dB)")
    parts.append(f"best quality {best.name}: {best.psnr:.2f} dB mean, worst image {best.psnr_min:.2f} dB, "
                 f"{best.p50_ms:.1f} ms ({_describe(QuantConfig(**best.config), best.calib_size)})")
    if good:
        g = min(good, key=lambda c: c.p50_ms)
        parts.append(f"fastest within the floors {g.name}: {g.psnr:.2f} dB, {g.p50_ms:.1f} ms "
                     f"({g.p50_ms / s.fp32_ms:.2f}x FP32's latency)")
    else:
        parts.append(f"no candidate reaches {s.floors()}")
    return "; ".join(parts)


def _qdq_twin(c: Candidate) -> QuantConfig:
    # The analysis reads the simulated float tensors of a QDQ graph, whatever format was chosen.
    return QuantConfig(**{**c.config, "nodes_to_exclude": []}).with_(format="QDQ")


def _sensitivity(s: _Search, base: Candidate) -> list[dict]:
    twin = _qdq_twin(base).with_(min_agreement=0.0)
    key = json.dumps({**twin.as_dict(), "name": "", "calib": base.calib_size}, sort_keys=True, default=str)
    if key not in s.sens_cache:
        probe = s.work / "sensitivity.onnx"
        quantize(s.fp32, probe, twin, s.pool[:base.calib_size], verify_batch=s.val_x[:64], guard=False)
        s.sens_cache[key] = node_sensitivity(s.fp32, probe, s.val_x[:128])
    return [dict(r) for r in s.sens_cache[key]]


def _fallback(s: _Search, base: Candidate, sens: list[dict], budget: float, start: list[str] | None = None
              ) -> Candidate | None:
    """Keep the most sensitive nodes in FP32 (after `start`), one more per step, re-measuring each time."""
    qbase = QuantConfig(**{**base.config, "nodes_to_exclude": []})
    excluded = list(start or [])
    for r in sens[: s.cfg.max_fallback_steps]:
        excluded.append(r["node"])
        c = s.measure(qbase.with_(nodes_to_exclude=list(excluded)), base.calib_size, "fallback")
        if s.meets(c, budget):
            return c
    return None


def _tensor_fallback(s: _Search, base: Candidate, rows: list[dict], budget: float) -> Candidate | None:
    """Greedy forward selection over the activations, costliest first: keep one more float (its producers and
    consumers unquantized), re-measure speed and accuracy, and keep that step only if the validation drop did not
    rise: a step that does not help is undone, not carried into every later one (in the ImageNet-mode
    EfficientNet-Lite0 search, 13 of 16 steps were undone and the 3 kept took 10.3 -> 3.3 pt of disagreement)."""
    qbase = QuantConfig(**{**base.config, "nodes_to_exclude": []})
    kept: list[str] = []
    best = s.drop_pt(base)
    steps = 0
    for r in rows:
        new = [n for n in r["nodes"] if n not in kept]
        if not new:
            continue  # already float: an earlier site's nodes cover it
        if steps == s.cfg.max_fallback_steps:
            break
        steps += 1
        c = s.measure(qbase.with_(nodes_to_exclude=kept + new), base.calib_size, "fallback")
        took = c.status == "ok" and s.drop_pt(c) <= best
        c.note = (c.note + "; " if c.note else "") + f"float: {r['tensor']}" + (
            "" if took else f" (undone: {s.metric} {s.drop_pt(c):.2f} pt vs {best:.2f})" if c.status == "ok" else " (undone)")
        if s.meets(c, budget):
            return c
        if took:
            kept, best = kept + new, s.drop_pt(c)
    return None


def _finish(outcomes: list, best: tuple, out: Path, cfg: AutoConfig, seconds: float):
    """One record for every target searched; `best` = (search, chosen or None, budget, sensitivity)."""

    s, chosen, budget, sens = best
    record = {"budget_pt": budget, "metric": s.metric, "calib_pool": len(s.pool),
              "calib_sizes": list(cfg.calib_sizes(len(s.pool))), **s.reference_facts(), "fp32_p50_ms": s.fp32_ms,
              "val_images": len(s.val_x), "targets": list(cfg.targets),
              "config": asdict(cfg), "candidates": [{**asdict(c), "drop_pt": o[0].drop_pt(c) if c.status == "ok" else None}
                                                    for o in outcomes for c in o[0].cands], "sensitivity": sens,
              "tensor_sensitivity": s.tensor_sens,
              "runtimes": _runtimes(outcomes), "seconds": seconds,
              "chosen": None if chosen is None else chosen.name, "met_budget": chosen is not None,
              "chosen_target": None if chosen is None else chosen.target,
              "per_target": {o[0].target: None if o[1] is None else {"chosen": o[1].name, "p50_ms": o[1].p50_ms,
                                                                     "drop_pt": o[0].drop_pt(o[1])}
                             for o in outcomes}}
    if chosen is None:
        msgs = [(_image_message(o[0]) if isinstance(o[0], _ImageSearch) else _budget_message(o[0], o[2]))
                for o in outcomes]
        record["message"] = msgs[0] if len(msgs) == 1 else "; ".join(f"on {o[0].target}: {m}"
                                                                        for o, m in zip(outcomes, msgs))
        s.log("auto: " + record["message"])
    else:
        record["chosen_drop_pt"] = s.drop_pt(chosen)
        record["chosen_p50_ms"] = chosen.p50_ms
        record["fp32_nodes_kept"] = len(chosen.excluded)
        write_onnx(s.work / f"{chosen.name}.onnx", out, {"variant": "auto", "auto_candidate": chosen.name,
                                                         "auto_target": chosen.target})
        where = f" on {chosen.target}" if len(outcomes) > 1 and "@" not in chosen.name else ""
        s.log(f"auto: chose {chosen.name}{where} ({_describe(QuantConfig(**chosen.config), chosen.calib_size)}): "
              f"{s.quality(chosen)}, {chosen.p50_ms:.2f} ms vs FP32 {s.fp32_ms:.2f} ms")
    write_json(out.parent / "search.json", record)
    _plots(record, out.parent)
    shutil.rmtree(s.work, ignore_errors=True)
    return record


def _budget_message(s: "_Search", budget: float) -> str:
    ok = [c for c in s.cands if c.status == "ok"]
    if not ok and any(c.status == "dominated" for c in s.cands):
        return "no candidate could be picked: " + "; ".join(dict.fromkeys(
            c.note for c in s.cands if c.status == "dominated"))
    if not ok:
        return "every candidate failed"
    best_acc = min(ok, key=s.drop_pt)
    return (f"the budget of {budget:.2f} pt cannot be met on this machine; best achievable drop is "
            f"{s.drop_pt(best_acc):.2f} pt ({best_acc.name})")


def _runtimes(outcomes) -> dict:
    """What each searched target ran: runtime and version."""
    return {o[0].target: _runtime_of(o[0].target) for o in outcomes}


def _runtime_of(target: str) -> str:
    name = get_target(target).package or target
    try:
        return f"{name} {md.version(name)}"
    except md.PackageNotFoundError:
        return name


def _plots(record: dict, out: Path) -> None:
    plt = pyplot()
    ok = [c for c in record["candidates"] if c["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in ok:
        color = {"speed": "#999999", "kept": "#3b7dd8", "accuracy": "#3b7dd8", "fallback": "#d8873b",
                 "tuning": "#2a9d5c"}.get(c["stage"], "#3b7dd8")
        edge = "red" if c["name"] == record["chosen"] else "none"
        y = c["psnr"] if record["metric"] == "psnr" else -c["drop_pt"]
        ax.scatter(c["p50_ms"], y, s=20 + 6 * c["size_bytes"] / 1e6, color=color, edgecolors=edge,
                   linewidths=2, alpha=0.8)
    floor = (record["min_psnr"] or 0) if record["metric"] == "psnr" else -record["budget_pt"]
    ax.axhline(floor, ls="--", color="green", lw=1, label="budget")
    ax.axvline(record["fp32_p50_ms"], ls=":", color="gray", lw=1, label="FP32 latency")
    ax.set_xlabel("batch-1 p50 latency (ms)")
    ax.set_ylabel({"top1-drop": "top-1 change vs FP32 (pt)", "psnr": "mean PSNR vs FP32 output (dB)"}.get(
        record["metric"], "-(disagreement with FP32) (pt)"))
    ax.set_title("Auto search: grey speed screen, blue sweep, orange fallback, green tuning (red ring: chosen)", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_png(fig, out / "plots" / "search_pareto.png")
    sens = record["sensitivity"][:15]
    if sens:
        fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(sens) + 1.2))
        ax.barh([r["node"][-40:] for r in sens][::-1], [r["added_error"] for r in sens][::-1], color="#d8873b")
        ax.set_xlabel("relative output error added by the node")
        ax.set_title("Most quantization-sensitive nodes")
        save_png(fig, out / "plots" / "sensitivity.png")


SUMMARY_KEYS = ("budget_pt", "metric", "met_budget", "chosen", "chosen_drop_pt", "chosen_p50_ms", "fp32_nodes_kept",
                "seconds", "message", "fp32_val_top1", "calib_sizes", "calib_pool", "min_psnr", "min_worst_psnr",
                "min_ssim", "floors", "fp32_p50_ms", "val_images", "targets", "chosen_target", "label_free")


def summary(rec: dict) -> SearchSummary:
    """The part of a search record a run's report carries (the rest is in search.json)."""
    out = SearchSummary(candidates=len(rec["candidates"]), **{k: rec.get(k) for k in SUMMARY_KEYS},
                        per_target={t: None if p is None else TargetPick(**p) for t, p in rec["per_target"].items()},
                        top_sensitive=node_errors(rec["sensitivity"][:5]),
                        top_tensors=tensor_errors((rec.get("tensor_sensitivity") or [])[:5]),
                        sensitivity_by_kind=by_kind(rec["sensitivity"]))
    chosen = next((c for c in rec["candidates"] if c["name"] == rec.get("chosen")), None)
    if chosen and rec.get("metric") == "psnr":
        out.chosen_psnr, out.chosen_psnr_min = chosen["psnr"], chosen["psnr_min"]
    return out


@register(AutoConfig)
def build_auto(cfg: AutoConfig, ctx: VariantContext, dst: Path, log) -> tuple[QuantCheck, VariantFacts]:
    """The auto variant: search on a validation split carved from the calibration split (every candidate's
    config and figures are in search.json; the file's metadata names the chosen one)."""

    rec = auto_quantize_from(ctx.fp32, dst, replace(ctx.data, classes=ctx.classes), cfg, log)
    facts = VariantFacts(search=summary(rec))
    if not rec["met_budget"]:
        raise refuse(QuantizeError(rec["message"]), facts=facts)
    return verify(ctx.fp32, dst, ctx.calib_x, 0.0), facts
