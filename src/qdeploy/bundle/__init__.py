"""`qdeploy bundle RUN_DIR --format triton,ovms`: a run's verified models as deployable serving layouts, with a
manifest (sha256 of every file, the source run's manifest, preprocessing, classes, versions), a golden request
(real preprocessed images and each model's expected outputs) and a README with client snippets.
`qdeploy bundle verify BUNDLE` re-checks all of it (see verify.py).

The bundle is built in a scratch folder beside --out and renamed into place only when complete, so a
directory named like a bundle is always a whole one.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..artifacts import read_info
from ..errors import BundleError, ConfigError, OutputError
from ..formats.keys import sha256
from ..manifest import load_run_manifest, run_eval_images, versions
from ..results import RunResult
from ..targets import open_session, run_batched
from .layouts import GOLDEN_INPUTS, LAYOUTS, MANIFEST, Placed
from .readme import write_readme
from .verify import verify_bundle


@dataclass
class BundleConfig:
    formats: tuple[str, ...] = ("triton", "ovms")
    variants: tuple[str, ...] | None = None    # None: FP32 and the run's recommended variant
    name: str | None = None                    # model name prefix (default: the run directory's name)
    max_batch_size: int = 32
    max_queue_delay_us: int = 2000
    instances: int = 1
    golden_images: int = 4

    def __post_init__(self):
        self.formats = tuple(self.formats)
        unknown = [f for f in self.formats if f not in LAYOUTS]
        if not self.formats or unknown:
            raise ConfigError(f"unknown bundle format {', '.join(unknown) or '(none)'}; use {', '.join(LAYOUTS)}")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ConfigError(f"model name '{self.name}' must use letters, digits, '.', '_' or '-'")
        if self.max_batch_size < 1 or self.instances < 1 or self.golden_images < 1 or self.max_queue_delay_us < 0:
            raise ConfigError("--max-batch-size, --instances and --golden-images must be >= 1")


def _chosen(rep, names) -> list:
    ok = {v.name: v for v in rep.variants if v.ok and v.file}
    if names is None:
        names = ["fp32"] + ([rep.recommended.variant] if rep.recommended else [])
    missing = [n for n in names if n not in ok]
    if missing:
        raise ConfigError(f"variant(s) {', '.join(missing)} not verified in this run; choose from {', '.join(ok)}")
    return [ok[n] for n in dict.fromkeys(names)]


def _golden(root: Path, run_dir: Path, man: dict, placed: list[Placed], n: int) -> dict:
    """Real preprocessed images from the run's evaluation split and every model's verified outputs on them: the
    run's own file in qdeploy's session on the runtime each layout's server uses (ONNX Runtime for Triton,
    OpenVINO for OVMS: the same INT8 file rounds differently in the two, and the run verified each)."""

    x, labels, names = run_eval_images(man, n)
    (root / "golden").mkdir(exist_ok=True)
    np.save(root / GOLDEN_INPUTS, x.astype(np.float32))
    expected: dict[str, dict] = {}
    for p in placed:
        target = LAYOUTS[p.layout].target
        e = expected.setdefault(p.name, {"kind": "fp32" if p.variant == "fp32" else "int8", "files": {}})
        if target in e["files"]:
            continue
        out = run_batched(open_session(run_dir / p.source, target=target), x)
        rel = f"golden/expected_{p.name}.{target}.npy"
        np.save(root / rel, out)
        e["files"][target] = rel
    fixed = read_info(run_dir / "fp32.onnx").fixed_inputs
    return {"inputs": GOLDEN_INPUTS, "images": names, "labels": None if labels is None else labels.tolist(),
            "fixed_inputs": {k: v["spec"] for k, v in fixed.items()}, "expected": expected}


def bundle_run(run_dir: str | Path, out: str | Path, cfg: BundleConfig | None = None, log=print) -> dict:
    """Write the bundle for a run directory at `out` (which must not exist or be empty); returns its manifest."""

    cfg = cfg or BundleConfig()
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out} already exists and is not empty; choose a new --out (bundles are never merged)")
    rep = RunResult.load(run_dir / "report.json")
    man = load_run_manifest(run_dir)
    info = read_info(run_dir / "fp32.onnx")
    prefix = cfg.name or re.sub(r"[^A-Za-z0-9_.-]", "-", run_dir.resolve().name)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.partial-", dir=out.parent) as tmp:
        root = Path(tmp)
        placed, skipped = [], []
        failed = rep.gate_failures()
        for v in _chosen(rep, cfg.variants):
            for fmt in cfg.formats:
                layout = LAYOUTS[fmt]()
                why = layout.accepts(run_dir / v.file) or (
                    f"FAILED the run's gate on {layout.target}, the runtime {fmt} serves it with: "
                    f"{failed[v.name, layout.target]}" if (v.name, layout.target) in failed else None)
                if why:
                    skipped.append({"variant": v.name, "format": fmt, "reason": why})
                    continue
                placed.append(layout.place(root, f"{prefix}-{v.name}", v.name, run_dir / v.file, info.classes, cfg))
        extra = [f for fmt in cfg.formats for f in LAYOUTS[fmt]().finish(root, placed)]
        if not placed:
            raise ConfigError("no chosen variant fits the chosen formats: " +
                              "; ".join(f"{s['variant']} ({s['format']}): {s['reason']}" for s in skipped))
        golden = _golden(root, run_dir, man, placed, cfg.golden_images)
        manifest = _manifest(root, run_dir, man, info, rep, cfg, placed, skipped, golden, extra, versions())

        write_readme(root, manifest)
        manifest["files"] = _hashes(root)
        (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

        verify_bundle(root)   # the bundle passes its own verification before it gets its name
        if out.exists():
            out.rmdir()
        os.replace(root, out)
        os.makedirs(root)     # the context manager removes the (now empty) scratch name
    log(f"bundle: {len(placed)} model(s) in {', '.join(cfg.formats)} -> {out}")
    return manifest


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): {"sha256": sha256(p), "bytes": p.stat().st_size}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _manifest(root, run_dir, man, info, rep, cfg, placed, skipped, golden, extra, vers) -> dict:
    return {"format_version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": asdict(cfg),
            "task": info.task, "classes": info.classes, "preprocess": asdict(info.preprocess),
            "models": [asdict(p) for p in placed], "skipped": skipped, "layout_files": extra,
            "golden": golden, "versions": vers, "source_run": {"path": str(run_dir.resolve()), "manifest": man,
                                                               "recommended": str(rep.recommended) if rep.recommended else None}}


def is_bundle(path: Path) -> bool:
    return (path / MANIFEST).is_file() and not (path / "report.json").exists()


def bundle_models(root: str | Path, log=print) -> dict[Path, tuple[str, ...]]:
    """The models a bundle serves, FP32 first, one file per variant (the layouts hold copies of the same file),
    each with the bundle's model names for its variant; only after the bundle passes `verify_bundle`: a tampered
    or incomplete bundle is never served."""

    root = Path(root)
    res = verify_bundle(root)
    man = json.loads((root / MANIFEST).read_text())
    chosen: dict[str, Path] = {}
    for m in man["models"]:
        if m["model_file"].endswith(".onnx"):
            chosen.setdefault(m["variant"], root / m["model_file"])
    log(f"bundle {root}: verified ({res['files']} files); serving {', '.join(chosen)}")
    names = {v: tuple(dict.fromkeys(m["name"] for m in man["models"] if m["variant"] == v)) for v in chosen}
    return {chosen[v]: names[v] for v in sorted(chosen, key=lambda v: v != "fp32")}


__all__ = ["BundleConfig", "BundleError", "bundle_models", "bundle_run", "is_bundle"]
