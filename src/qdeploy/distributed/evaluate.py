"""Sharded evaluation on Ray: every model file over shards of the evaluation set, merged into the same scorers a
local run feeds, in the same order, so every metric (and the McNemar table) equals the local run's.

Shards are runs of whole evaluation batches (about `shard_images` images, or `shard_batches`), so each model sees
exactly the batches it sees locally. A worker holds one session per model (loaded once per worker process from bytes the
driver put in Ray's object store, so remote nodes need no shared disk for models; the images must be readable at
the same path on every node), streams its shard and returns the outputs. The driver consumes shards in order with
a bounded window in flight, updates the scorers and drops the outputs. A shard whose worker dies is re-run by Ray
(`max_retries`); the driver counts each shard once, by index, whatever attempt produced it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data import ImageSet, PreprocessSpec, batch_for
from ..errors import ConfigError
from ..targets import open_session
from ..tasks import get_task
from .cluster import RayConfig

_SESSIONS: dict = {}          # per worker process: (sha, target, threads) -> session
_DIR: list[str] = []


def _model_files(path: Path) -> list[Path]:
    """The file and what loads with it (an OpenVINO IR's .bin, an ONNX file's external data)."""
    path = Path(path)
    extra = [path.with_suffix(".bin")] if path.suffix == ".xml" else [path.with_name(path.name + ".data")]
    return [path] + [p for p in extra if p.is_file()]


def _pack(path: Path) -> tuple[str, dict[str, bytes]]:
    files = {p.name: p.read_bytes() for p in _model_files(path)}
    h = hashlib.sha256()
    for k in sorted(files):
        h.update(k.encode())
        h.update(files[k])
    return h.hexdigest()[:16], files


def put_models(ray, files: dict[str, tuple[Path, str]]) -> dict[str, tuple]:
    """{name: (sha, object ref, file name, target)}; each distinct file (a variant is often the same file on
    several targets) is read and put in the object store once."""
    stored, out = {}, {}
    for n, (path, target) in files.items():
        key = str(Path(path).resolve())
        if key not in stored:
            sha, data = _pack(path)
            stored[key] = (sha, ray.put(data), Path(path).name)
        out[n] = stored[key] + (target,)
    return out


def materialize(ray, sha: str, ref) -> Path:
    """(In a worker) the folder holding a packed model's files, written once per worker process."""
    if not _DIR:
        _DIR.append(tempfile.mkdtemp(prefix="qdeploy-ray-"))
    folder = Path(_DIR[0]) / sha
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for fname, data in ray.get(ref).items():
            (folder / fname).write_bytes(data)
    return folder


def _session(ray, sha: str, ref, name: str, target: str, threads: int):
    key = (sha, target, threads)
    if key not in _SESSIONS:
        _SESSIONS[key] = open_session(materialize(ray, sha, ref) / name, threads, spinning=False, target=target)
    return _SESSIONS[key]


def _shard_task(ray, rcfg: RayConfig):
    return ray.remote(eval_shard).options(num_cpus=rcfg.cpus_per_task, max_retries=rcfg.max_retries)


def eval_shard(index: int, models: dict, subset: ImageSet, spec: PreprocessSpec, batch_size: int, threads: int,
               heartbeat_dir: str | None) -> list:
    """[(labels, {model: outputs}) per batch] for one shard (runs in a Ray worker)."""
    import ray

    marker = None
    if heartbeat_dir:
        marker = Path(heartbeat_dir) / f"shard-{index:05d}.pid-{os.getpid()}.running"
        marker.write_text("")
    sessions = {n: _session(ray, sha, ref, fname, target, threads) for n, (sha, ref, fname, target) in models.items()}
    out = []
    for batch in subset.batches(spec, batch_size, workers=2, prefetch=1):
        out.append((batch.labels, {n: s.run(batch.x) for n, s in sessions.items()}))
    if marker is not None:
        marker.rename(marker.with_suffix(".done"))
    return out


def shard_ranges(n: int, batch_size: int, shard_batches: int) -> list[tuple[int, int]]:
    step = batch_size * shard_batches
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def evaluate_sharded(files: dict[str, tuple[Path, str]], images: ImageSet, spec: PreprocessSpec, classes: list[str],
                     cfg, rcfg: RayConfig, ray, progress: bool = True) -> dict:
    """{name: scorer}, like evaluate.evaluate_many, for model files {name: (path, target)} (the first is the
    reference), evaluated on the connected Ray cluster."""
    task = get_task(cfg.task)
    if not task.has_classes:
        raise ConfigError("--ray shards classification evaluation only; an image-to-image model's outputs are "
                          "images, which cost more to ship back than to compute: run it without --ray")
    names = list(files)
    batch_size = cfg.batch_size or batch_for(spec.side)
    ranges = shard_ranges(len(images), batch_size, rcfg.batches_per_shard(batch_size))
    packed, remote = put_models(ray, files), _shard_task(ray, rcfg)
    fnames = [p.name for p in images.paths] if images.paths is not None else None
    scorers = {n: task.scorer(classes, images.labelled, with_reference=i > 0, names=fnames) for i, n in enumerate(names)}
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1) // rcfg.cpus_per_task))
    bar = None
    if progress:

        bar = tqdm(total=len(images), desc=f"eval {len(names)} model(s) on ray, {len(ranges)} shards", unit="img",
                   leave=False)
    refs: dict[int, object] = {}
    nxt = 0
    try:
        for i, (a, b) in enumerate(ranges):
            while nxt < len(ranges) and nxt < i + window:
                s, e = ranges[nxt]
                refs[nxt] = remote.remote(nxt, packed, images.subset(range(s, e)), spec, batch_size, rcfg.threads,
                                          rcfg.heartbeat_dir)
                nxt += 1
            for labels, outs in ray.get(refs.pop(i)):
                ref = outs[names[0]]
                for n in names:
                    scorers[n].update(outs[n], labels, ref if n != names[0] else None)
            if bar is not None:
                bar.update(b - a)
    finally:
        for r in refs.values():
            ray.cancel(r, force=True)
        if bar is not None:
            bar.close()
    return scorers


def shard_outputs(files: dict[str, tuple[Path, str]], images: ImageSet, spec: PreprocessSpec, rcfg: RayConfig, ray,
                  batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Every model's outputs over the whole set, merged in order (for checks and small sets; evaluate_sharded is
    the bounded path)."""
    batch_size = batch_size or batch_for(spec.side)
    packed, remote = put_models(ray, files), _shard_task(ray, rcfg)
    refs = [remote.remote(i, packed, images.subset(range(a, b)), spec, batch_size, rcfg.threads, rcfg.heartbeat_dir)
            for i, (a, b) in enumerate(shard_ranges(len(images), batch_size, rcfg.batches_per_shard(batch_size)))]
    parts = [batch for r in refs for batch in ray.get(r)]
    return {n: np.concatenate([outs[n] for _, outs in parts]) for n in files}
