"""ONNX Runtime variants built on Ray: each static/dynamic recipe is calibrated, quantized and verified against
FP32 in a worker (the FP32 file and the calibration images go through Ray's object store once), and the verified
file comes back to the driver, which writes it under its final name. Variants that need the PyTorch model or the
run's data (pt-*, auto, nncf) build on the driver meanwhile. The build is deterministic: a variant built on Ray
is byte-for-byte the one a local run writes.
"""
from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

from ..artifacts import atomic_path
from ..errors import QDeployError, QuantizeError
from ..quantize.base import VariantContext, handler_for, refuse
from ..recipes import QuantConfig
from ..targets import DEFAULT_TARGET
from .evaluate import materialize, put_models


def remote_buildable(cfg) -> bool:
    return type(cfg) is QuantConfig


def _build(name: str, cfg, fp32: tuple, calib_x) -> dict:
    """In a Ray worker: the variant built in a scratch folder; its bytes and check, or the one-line failure."""
    import ray


    sha, ref, fname = fp32
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qdeploy-ray-build-") as tmp:
        dst = Path(tmp) / f"int8_{name}.onnx"
        ctx = VariantContext(fp32=materialize(ray, sha, ref) / fname, out=Path(tmp), calib_x=calib_x, classes=[],
                             spec=None)
        try:
            check, facts = handler_for(cfg)(cfg, ctx, dst, lambda m: None)
        except QDeployError as exc:
            return {"error": str(exc), "check": exc.check, "facts": exc.facts}
        return {"check": check, "facts": facts, "file": dst.read_bytes(), "seconds": time.perf_counter() - t0,
                "node": socket.gethostname()}


def submit_builds(ray, items: dict, ctx: VariantContext, rcfg) -> dict:
    """{name: ObjectRef} for every remotely buildable config in `items` {name: config}."""
    chosen = {n: c for n, c in items.items() if remote_buildable(c)}
    if not chosen:
        return {}
    fp32 = put_models(ray, {"fp32": (ctx.fp32, DEFAULT_TARGET)})["fp32"][:3]
    calib = ray.put(ctx.calib_x)
    task = ray.remote(_build).options(num_cpus=rcfg.cpus_per_task, max_retries=rcfg.max_retries)
    return {n: task.remote(n, c, fp32, calib) for n, c in chosen.items()}


def fetched(ray, ref, log):
    """A handler for build_variant that takes the remote result: writes the verified file at dst (atomically),
    or raises the worker's error (with its check and facts, so the report shows why)."""

    def handler(cfg, ctx, dst, _log):
        res = ray.get(ref)
        if "error" in res:
            raise refuse(QuantizeError(res["error"]), res["check"], res["facts"])
        with atomic_path(dst) as tmp:
            tmp.write_bytes(res["file"])
        log(f"quantize {cfg.name}: built on ray ({res['node']}, {res['seconds']:.1f}s)")
        return res["check"], res["facts"]

    return handler
