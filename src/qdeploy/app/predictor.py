"""Load every variant once (sessions shared by all requests) and compare them on one image."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import ModelInfo, model_bytes, read_info
from ..bundle import bundle_models, is_bundle
from ..compare import compare_outputs
from ..errors import ModelFileError
from ..results import RunResult
from ..targets import DEFAULT_TARGET, open_session, runs_on, target_for
from ..tasks import get_task
from ..tasks.image import image_pair_metrics, to_uint8
from .batching import DynamicBatcher


@dataclass
class Variant:
    name: str
    info: ModelInfo
    session: object
    size_bytes: int
    aliases: tuple[str, ...] = ()   # other names it answers to on the v2 routes (a bundle's model names)
    batcher: object = None          # app.batching.DynamicBatcher for serving requests, or None

    def logits(self, x: np.ndarray, direct: bool = False) -> np.ndarray:
        """Outputs for the batch `x`; through the dynamic batcher unless `direct` (timed runs, offline batches)."""
        return self.session.run(x) if direct or self.batcher is None else self.batcher(x)

    def outputs(self, x: np.ndarray, fixed: dict | None = None, direct: bool = False) -> np.ndarray:
        """The output batch, with `fixed` replacing stored extra inputs (another style); such requests run alone."""
        return self.session.run(x, fixed=fixed) if fixed else self.logits(x, direct)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def resolve_models(targets: list[str | Path], target: str = DEFAULT_TARGET, log=lambda m: None
                   ) -> tuple[list[Path], RunResult | None, dict[Path, tuple[str, ...]]]:
    """Run directories, bundles and/or model files -> ordered paths (FP32 first) and the run's report, if any.
    From a run directory: every verified variant `target` can run (ONNX files; on openvino-cpu also the nncf IR).
    From a bundle (`qdeploy bundle`): its models, after the bundle passes verification; the third value maps each
    bundled file to the bundle's model names for it (so a Triton client's model name works here too)."""
    paths, report, aliases = [], None, {}
    for t in map(Path, targets):
        if t.is_dir():
            rj = t / "report.json"

            if is_bundle(t):
                named = bundle_models(t, log=log)
                paths += list(named)
                aliases.update(named)
            elif rj.is_file():
                report = RunResult.load(rj)
                paths += [t / v.file for v in report.variants if v.ok and (t / v.file).is_file()
                          and runs_on(v.file, target)]
            else:
                paths += sorted(t.glob("*.onnx"), key=lambda p: (p.name != "fp32.onnx", p.name))
        elif t.suffix == ".onnx" or t.exists():
            paths.append(t)
        else:
            raise ModelFileError(f"{t} is neither a run directory, a bundle nor an ONNX file; pass 'qdeploy serve "
                                 "runs/r18', 'qdeploy serve bundle/' or 'qdeploy serve fp32.onnx int8.onnx'")
    if not paths:
        raise ModelFileError(f"no ONNX models found in {', '.join(map(str, targets))}; run 'qdeploy run' first")
    return paths, report, aliases


@dataclass
class Predictor:
    variants: list[Variant]
    report: RunResult | None = None
    latency_runs: int = 5
    facts: dict = field(default_factory=dict)

    @classmethod
    def load(cls, targets, threads: int | None = None, latency_runs: int = 5, target: str | None = None,
             log=lambda m: None, max_batch: int = 1, batch_delay_ms: float = 2.0) -> "Predictor":
        """target: where ONNX files run (default ort-cpu); a file in a runtime's own format runs there.
        max_batch > 1: classifiers' serving requests share batched runs (app.batching); image-to-image requests
        (one large image each, little to gain) always run alone."""
        paths, report, aliases = resolve_models(targets, target or DEFAULT_TARGET, log=log)
        variants, seen = [], set()
        for p in paths:
            info = read_info(p)
            name = info.variant if info.variant not in seen else f"{info.variant} ({p.name})"
            seen.add(name)
            session = open_session(p, threads, spinning=False, target=target_for(p, target))
            variants.append(Variant(name=name, info=info, session=session, size_bytes=model_bytes(p),
                                    aliases=tuple(a for a in aliases.get(p, ()) if a != name)))
        first = variants[0].info
        spec = first.require_preprocess()  # serving cannot guess how images become inputs
        if not get_task(first.task).has_classes:
            for v in variants[1:]:
                if v.info.preprocess != first.preprocess or v.info.task != first.task:
                    raise ModelFileError(f"{v.info.path.name} has different preprocessing or task than "
                                         f"{first.path.name}; serve models of one run together")
            return cls(variants=variants, report=report, latency_runs=latency_runs, facts=_facts(report, variants))
        if max_batch > 1:

            for v in variants:
                v.batcher = DynamicBatcher(v.session.run, max_batch, batch_delay_ms / 1e3, v.name)
        if first.classes is None:  # a foreign file: number the outputs
            n = variants[0].logits(np.zeros((1, 3, spec.size, spec.size), np.float32)).shape[-1]
            for v in variants:
                v.info.classes = [str(i) for i in range(n)]
        for v in variants[1:]:
            if v.info.preprocess != first.preprocess or v.info.classes != first.classes:
                raise ModelFileError(f"{v.info.path.name} has different preprocessing or classes than "
                                     f"{first.path.name}; serve models of one run together")
        return cls(variants=variants, report=report, latency_runs=latency_runs, facts=_facts(report, variants))

    @property
    def spec(self):
        return self.variants[0].info.preprocess

    @property
    def classes(self) -> list[str]:
        return self.variants[0].info.classes

    @property
    def task(self) -> str:
        return self.variants[0].info.task

    def pickers(self) -> dict[str, dict]:
        """Extra inputs the user may choose per request: 1-D one-hot ones (a style index), with their run value."""
        out = {}
        for name, f in self.variants[0].info.fixed_inputs.items():
            if len(f["shape"]) == 1 and str(f.get("spec", "")).startswith("onehot:"):
                out[name] = {"choices": f["shape"][0], "default": int(f["spec"].split(":")[1])}
        return out

    def _fixed_for(self, choice: dict | None) -> dict | None:
        if not choice:
            return None
        pickers, feeds = self.pickers(), {}
        for name, k in choice.items():
            if name not in pickers:
                raise ModelFileError(f"'{name}' is not a choosable input of these models "
                                     f"(choosable: {', '.join(pickers) or 'none'})")
            n = pickers[name]["choices"]
            if not isinstance(k, int) or not 0 <= k < n:
                raise ModelFileError(f"{name} must be an index 0..{n - 1}, got {k!r}")
            dtype = self.variants[0].info.fixed_inputs[name]["dtype"]
            feeds[name] = np.eye(n, dtype=dtype)[k]
        return feeds

    def _run(self, fn, timed: bool):
        """(output, ms). timed: one untimed run (caches and the thread pool awake for this model), then the median
        of `latency_runs` (the demo page); otherwise the one run the request needs, timed (serving)."""
        if timed:
            fn()
        times, out = [], None
        for _ in range(max(1, self.latency_runs) if timed else 1):
            t0 = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return out, float(np.median(times))

    def _timing(self, timed: bool) -> str:
        return f"median of {max(1, self.latency_runs)} runs after a warm-up" if timed else "the request's one run"

    def transform(self, img, choice: dict | None = None, timed: bool = True) -> dict:
        """Image-to-image: every variant's output image for one photo (optionally another style), its
        latency (median of runs when `timed`), and PSNR/SSIM/max error against the first (FP32) variant's output."""

        seen = self.spec.resize_image(img)
        x = self.spec.normalize(np.asarray(seen))
        fixed = self._fixed_for(choice)
        rows, ref = [], None
        for v in self.variants:
            out, ms = self._run(lambda v=v: v.outputs(x, fixed, direct=timed)[0], timed)
            row = {"name": v.name, "latency_ms": ms, "image": to_uint8(out)}
            if ref is None:
                ref = (out, row)
            else:
                row.update(image_pair_metrics(ref[0], out))
                row["speedup"] = ref[1]["latency_ms"] / max(row["latency_ms"], 1e-9)
            rows.append(row)
        chosen = {k: (choice or {}).get(k, p["default"]) for k, p in self.pickers().items()}
        return {"input": {"width": img.size[0], "height": img.size[1], "model_input": self.spec.size,
                          "resize": self.spec.resize}, "choice": chosen, "variants": rows, "seen": seen,
                "timing": self._timing(timed)}

    def predict(self, img, top_k: int = 3, timed: bool = True, only: str | None = None) -> dict:
        """One RGB image -> each variant's top-k, latency (median of runs when `timed`, else the one run),
        agreement with the first; `only`: that one variant (serving one model, no comparison)."""
        seen = self.spec.resize_image(img)
        x = self.spec.normalize(np.asarray(seen))
        rows, ref = [], None
        for v in self.variants if only is None else [v for v in self.variants if v.name == only]:
            z, ms = self._run(lambda v=v: v.logits(x, direct=timed)[0], timed)
            p = softmax(z)
            order = np.argsort(-p)[:top_k]
            row = {"name": v.name, "top": [{"label": self.classes[i], "prob": float(p[i])} for i in order],
                   "latency_ms": ms, "top1": self.classes[int(order[0])]}
            if ref is None:
                ref = (z, row)
            else:
                row["agrees"] = row["top1"] == ref[1]["top1"]
                row["rel_diff"] = compare_outputs(ref[0][None], z[None]).rel_l2
                row["speedup"] = ref[1]["latency_ms"] / max(row["latency_ms"], 1e-9)
            rows.append(row)
        return {"input": {"width": img.size[0], "height": img.size[1], "model_input": self.spec.size,
                          "resize": self.spec.resize}, "variants": rows, "seen": seen, "timing": self._timing(timed)}

    def predict_batch(self, x: np.ndarray | None) -> list[list[str]]:
        """Top-1 class per preprocessed input for each variant, 64 at a time."""
        if x is None or not len(x):
            return [[] for _ in self.variants]
        out = []
        for v in self.variants:
            z = np.concatenate([v.logits(x[i:i + 64], direct=True) for i in range(0, len(x), 64)])
            out.append([self.classes[i] for i in z.argmax(1)])
        return out


def _facts(report: RunResult | None, variants: list[Variant]) -> dict:
    """Per-variant facts from the run's report (size, compression, accuracy, agreement, latency)."""
    facts = {v.name: {"size_mb": v.size_bytes / 1e6} for v in variants}
    if not report:
        return facts
    fp32, task = report.fp32, get_task(report.task)
    for name, f in facts.items():
        r = report.get(name)
        if r is None or not r.measured:
            continue
        f.update(task.facts(r.metrics))
        f["p50_ms"] = r.bench.p50_ms
        if fp32:
            f["compression"] = fp32.bench.size_bytes / r.bench.size_bytes
            f["speedup"] = fp32.bench.p50_ms / r.bench.p50_ms
    return facts
