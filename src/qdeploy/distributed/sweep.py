"""`qdeploy sweep sweep.yaml`: models x variants x targets, every cell a full `qdeploy run` in its own folder, on a
local process pool or on Ray, then one leaderboard (md/html/json).

    out: runs/sweep                 # default: runs/sweep-<file stem>, relative to the current directory
    max_drop: 1.0                   # classifiers: the budget (top-1 points vs FP32); image models: min_psnr (dB)
    defaults: {eval_limit: 2000, bench_runs: 100}       # any `qdeploy run` option, for every cell
    models:
      r18: {checkpoint: ../shared/checkpoints/resnet18_cifar10.pth, data: ../shared/datasets/cifar10}
      lite0: {arch: efficientnet-lite0, pretrained: imagenet, data: ..., size: 224}
    variants: [default, dynamic, seed-lab5]
    targets: [ort-cpu]

Paths (checkpoint, onnx, data, classes_file, qat_from) are relative to the YAML file. A cell is keyed by the hash
of its inputs (its options, the checkpoint/ONNX file's sha256, the data folder's file names and sizes, qdeploy's
version): re-running a sweep skips every cell whose finished record has the same key, and re-runs the rest.
A cell that fails (bad checkpoint, a variant refused as collapsed) is recorded FAILED with its one-line reason;
the others go on. Cells compute side by side, but each cell's benchmark holds its machine alone (nodelock), so no
latency in the leaderboard was measured while another cell computed on the same machine.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from .. import __version__
from ..errors import ConfigError
from ..formats.keys import sha256
from ..registry import lookup
from ..results import RunResult
from ..targets import DEFAULT_TARGET
from ..tasks import get_task
from . import nodelock
from .cluster import RayConfig, ray_cluster
from .leaderboard import write_leaderboard

PATH_KEYS = ("checkpoint", "onnx", "data", "classes_file", "qat_from")
RESERVED = ("out", "variants", "targets", "ray", "ray_address", "ray_cpus")
CELL_RECORD = "cell.json"


@dataclass
class Cell:
    model: str
    variant: str
    target: str
    options: dict              # `qdeploy run` options (paths absolute)
    key: str = ""

    @property
    def name(self) -> str:
        return f"{self.model}__{self.variant}__{self.target}"


@dataclass
class SweepConfig:
    out: str
    models: dict[str, dict]
    variants: list[str]
    targets: list[str] = field(default_factory=lambda: [DEFAULT_TARGET])
    defaults: dict = field(default_factory=dict)
    max_drop: float = 1.0
    min_psnr: float = 30.0
    source: str = ""           # the YAML file

    def __post_init__(self):
        if not self.models or not self.variants:
            raise ConfigError("a sweep needs `models:` (name: options) and `variants:` (a list)")
        for name, opts in self.models.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
                raise ConfigError(f"model name '{name}' must use letters, digits, '.', '_' or '-'")
            if not isinstance(opts, dict):
                raise ConfigError(f"model '{name}' needs a mapping of `qdeploy run` options, e.g. {{checkpoint: x.pth}}")
            bad = [k for k in opts if k in RESERVED]
            if bad:
                raise ConfigError(f"model '{name}': {', '.join(bad)} is set by the sweep itself; remove it")

    def cells(self) -> list[Cell]:
        base = Path(self.source).parent if self.source else Path(".")
        out = []
        for model, opts in self.models.items():
            merged = {**self.defaults, **opts}
            for k in PATH_KEYS:
                if merged.get(k):
                    merged[k] = str((base / str(merged[k])).resolve())
            for v in self.variants:
                for t in self.targets:
                    out.append(Cell(model, v, t, merged))
        return out


def load_sweep(path: str | Path, out: str | None = None) -> SweepConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError:
        raise ConfigError(f"cannot read sweep file {path}; pass a YAML file (see 'qdeploy sweep --help')") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a YAML mapping with models: and variants:")
    known = {"out", "models", "variants", "targets", "defaults", "max_drop", "min_psnr"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; use {', '.join(sorted(known))}")
    as_list = lambda v: [s.strip() for s in v.split(",")] if isinstance(v, str) else list(v or [])  # noqa: E731
    return SweepConfig(out=out or raw.get("out") or f"runs/sweep-{path.stem}", models=raw.get("models") or {},
                       variants=as_list(raw.get("variants")), targets=as_list(raw.get("targets") or [DEFAULT_TARGET]),
                       defaults=raw.get("defaults") or {}, max_drop=float(raw.get("max_drop", 1.0)),
                       min_psnr=float(raw.get("min_psnr", 30.0)), source=str(path))


# --- cell keys: the hash of everything a cell's result depends on --------------------------------------------

def _file_digest(p: Path) -> str:
    return sha256(p) if p.is_file() else f"missing:{p}"


def _dir_digest(p: Path) -> str:
    """Names and sizes of every file under a data folder (cheap; a changed or added image changes it)."""
    if not p.is_dir():
        return f"missing:{p}"
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if f.is_file():
            h.update(f"{f.relative_to(p)}:{f.stat().st_size}\n".encode())
    return h.hexdigest()


def cell_key(cell: Cell, digests: dict) -> str:
    parts = {"qdeploy": __version__, "model": cell.model, "variant": cell.variant, "target": cell.target,
             "options": cell.options}
    for k in ("checkpoint", "onnx", "qat_from"):
        if cell.options.get(k):
            parts[k] = digests.setdefault(("f", cell.options[k]), _file_digest(Path(cell.options[k])))
    if cell.options.get("data"):
        parts["data"] = digests.setdefault(("d", cell.options["data"]), _dir_digest(Path(cell.options["data"])))
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


# --- running one cell -------------------------------------------------------------------------------------------

def cell_args(cell: Cell, run_dir: Path) -> list[str]:
    args = ["run", "--out", str(run_dir), "--variants", cell.variant, "--targets", cell.target]
    for k, v in cell.options.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            args.append(flag)
        elif v is False or v is None:
            continue
        elif isinstance(v, (list, tuple)):
            args += [flag, ",".join(map(str, v))]
        else:
            args += [flag, str(v)]
    return args


def _reason(stderr: str, rc: int) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    errs = [l for l in lines if l.startswith("error: ")]
    return (errs[-1][7:] if errs else lines[-1] if lines else f"exit status {rc}")[:400]


def run_cell(cell: Cell, out: str, lock: str | None, timeout: float | None = None) -> dict:
    """One cell as a `qdeploy run` subprocess into out/cells/<name>/ (built in a scratch folder, renamed when
    done); returns its record, also written to cell.json. Runs in the sweep's process pool or a Ray worker."""
    final = Path(out) / "cells" / cell.name
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{cell.name}.partial-", dir=final.parent))

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    rec = {"cell": cell.name, "model": cell.model, "variant": cell.variant, "target": cell.target, "key": cell.key,
           "node": socket.gethostname(), "pid": os.getpid()}
    try:
        with (nodelock.shared_fd(lock) if lock else contextlib.nullcontext()) as fd:
            if fd is not None:
                env.update({nodelock.ENV: lock, nodelock.ENV_FD: str(fd)})
            r = subprocess.run([sys.executable, "-m", "qdeploy", *cell_args(cell, scratch / "run")], env=env,
                               capture_output=True, text=True, timeout=timeout, pass_fds=(fd,) if fd is not None else ())
        (scratch / "log.txt").write_text(r.stderr[-200_000:])
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        if r.returncode != 0:
            rec.update(status="FAILED", reason=_reason(r.stderr, r.returncode))
        else:
            rec.update(summarize(scratch / "run", cell))
    except subprocess.TimeoutExpired:
        rec.update(status="FAILED", reason=f"timed out after {timeout:.0f}s", seconds=round(time.perf_counter() - t0, 1))
    if rec.get("status") == "ok":
        rec["report"] = str(final / "run" / "report.html")
    (scratch / CELL_RECORD).write_text(json.dumps(rec, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(scratch, final)
    return rec


def summarize(run_dir: Path, cell: Cell) -> dict:
    """The leaderboard's facts from a cell's report.json (and whether its variant came out)."""

    rep = RunResult.load(run_dir / "report.json")
    man = json.loads((run_dir / "manifest.json").read_text())
    by = {v.name: v for v in rep.variants}
    fp32, v = by.get("fp32"), by.get(cell.variant)
    if v is None or not v.ok:
        why = v.error if v is not None and v.error else "the variant was not produced"
        return {"status": "FAILED", "reason": f"variant {cell.variant}: {why}"}

    def on_target(x):
        if cell.target != DEFAULT_TARGET and cell.target in x.on:
            t = x.on[cell.target]
            return t.metrics or x.metrics, t.bench
        return x.metrics, x.bench

    m, b = on_target(v)
    fm, fb = on_target(fp32)
    rec = {"status": "ok", "task": rep.task,
           "size_bytes": (run_dir / v.file).stat().st_size if (run_dir / v.file).is_file() else None,
           "fp32_size_bytes": (run_dir / fp32.file).stat().st_size,
           "p50_ms": b.p50_ms if b else None, "p99_ms": b.p99_ms if b else None,
           "fp32_p50_ms": fb.p50_ms if fb else None,
           "bench": man.get("stages", {}).get("bench", {})}
    rec.update(get_task(rep.task).cell_facts(m, fm))
    return rec


# --- backends ---------------------------------------------------------------------------------------------------

class Backend:
    name = ""

    def configure(self, workers: int = 1, ray_cfg=None, log=print) -> None:
        self.workers, self.ray_cfg, self.log = max(1, workers), ray_cfg, log

    def map(self, cells: list[Cell], out: str, lock: str | None, on_done) -> list[dict]:
        raise NotImplementedError


class LocalBackend(Backend):
    """A pool of `workers` processes on this machine (each cell is its own `qdeploy run` process)."""
    name = "local"

    def map(self, cells, out, lock, on_done):
        recs = []
        with cf.ThreadPoolExecutor(self.workers) as pool:   # threads that each wait on one cell subprocess
            futs = [pool.submit(run_cell, c, out, lock) for c in cells]
            for f in cf.as_completed(futs):
                recs.append(f.result())
                on_done(recs[-1])
        return recs


class RayBackend(Backend):
    """One Ray task per cell (`cpus_per_cell` CPUs); `out` must be on storage every node sees. Each node's cells
    share that node's lock file, so benchmarks never overlap other cells' work on the same machine."""
    name = "ray"

    def map(self, cells, out, lock, on_done):
        cfg = self.ray_cfg or RayConfig()
        with ray_cluster(cfg, self.log) as ray:
            task = ray.remote(run_cell).options(num_cpus=cfg.cpus_per_task, max_retries=cfg.max_retries)
            pending = {task.remote(c, out, lock): c for c in cells}
            recs = []
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                c = pending.pop(done[0])
                try:
                    rec = ray.get(done[0])
                except Exception as exc:  # noqa: BLE001 - a cell's worker lost for good: the cell fails, not the sweep
                    rec = {"cell": c.name, "model": c.model, "variant": c.variant, "target": c.target, "key": c.key,
                           "status": "FAILED", "reason": f"ray: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                recs.append(rec)
                on_done(rec)
        return recs


BACKENDS = {"local": LocalBackend, "ray": RayBackend}


def run_sweep(cfg: SweepConfig, backend: str = "local", workers: int = 1, ray_cfg=None, log=print) -> dict:
    """Every cell not already finished with the same key, then the leaderboard; returns the leaderboard dict."""

    be = lookup(BACKENDS, backend, "sweep backend")
    be.configure(workers, ray_cfg, log)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cells, digests = cfg.cells(), {}
    for c in cells:
        c.key = cell_key(c, digests)
    records, todo = {}, []
    for c in cells:
        rec_path = out / "cells" / c.name / CELL_RECORD
        old = json.loads(rec_path.read_text()) if rec_path.is_file() else None
        if old and old.get("key") == c.key and old.get("status") == "ok":
            records[c.name] = {**old, "resumed": True}
        else:
            todo.append(c)
    log(f"sweep: {len(cells)} cells ({len(cfg.models)} models x {len(cfg.variants)} variants x {len(cfg.targets)} "
        f"targets); {len(records)} finished before (same inputs), {len(todo)} to run on {be.name}")
    lock = str(Path(tempfile.gettempdir()) / f"qdeploy-node-{hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]}.lock")
    bar = None
    if todo:

        bar = tqdm(total=len(todo), desc="sweep", unit="cell")

    def done(rec):
        status = rec["status"] if rec["status"] != "ok" else f"ok, {get_task(rec['task']).cell_quality(rec)}"
        msg = f"{rec['cell']}: {status}" + (f" ({rec['reason']})" if rec.get("reason") else "") + \
              (f", {rec['p50_ms']:.2f} ms" if rec.get("p50_ms") else "")
        (bar.write if bar is not None else log)(msg)
        if bar is not None:
            bar.update(1)

    t0 = time.perf_counter()
    try:
        for rec in be.map(todo, str(out), lock, done):
            records[rec["cell"]] = rec
    finally:
        if bar is not None:
            bar.close()
    ordered = [records[c.name] for c in cells if c.name in records]
    board = write_leaderboard(out, cfg, ordered, {"backend": be.name, "seconds": round(time.perf_counter() - t0, 1),
                                                  "ran": len(todo), "resumed": len(cells) - len(todo)})
    return board


__all__ = ["BACKENDS", "Cell", "SweepConfig", "load_sweep", "run_sweep"]
