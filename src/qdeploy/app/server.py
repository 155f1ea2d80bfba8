"""FastAPI app: JSON API beside the Gradio page, one set of shared ONNX Runtime sessions.

No `from __future__ import annotations` here: FastAPI reads the route signatures at run time.
"""

import base64
import io
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Optional

from PIL import Image

from ..errors import ConfigError
from ..targets import check_targets
from ..tasks import get_task
from .images import ImageInputError, UploadLimits, load_image
from .kserve import add_v2_routes
from .metrics import ServeMetrics, add_metrics
from .predictor import Predictor
from .ui import PAGE_CSS, build_ui


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: Optional[str] = None      # "user:pass"
    max_concurrency: int = 4        # inferences at once (with batching: batches of up to max_batch) ...
    max_queue: int = 64             # ... up to this many more wait, then 503
    max_batch: int = 16             # classifiers: concurrent requests share one run of up to this many (1: off)
    batch_delay_ms: float = 2.0     # under load, how long a lone request waits for company
    max_upload_mb: float = 10.0
    max_megapixels: float = 40.0
    threads: Optional[int] = None
    latency_runs: int = 5
    target: Optional[str] = None    # where ONNX files run (None: ort-cpu); see targets.TARGETS

    def __post_init__(self):
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"port {self.port} is out of range 0..65535")
        if self.auth is not None and (":" not in self.auth or not self.auth.split(":", 1)[0]):
            raise ConfigError("--auth must look like user:password")
        if self.max_concurrency < 1 or self.max_queue < 0:
            raise ConfigError("max concurrency must be >= 1 and max queue >= 0")
        if self.max_batch < 1 or not 0 <= self.batch_delay_ms <= 1000:
            raise ConfigError("--max-batch must be >= 1 and --batch-delay-ms in 0..1000")
        if self.target is not None:

            check_targets([self.target])

    @property
    def limits(self) -> UploadLimits:
        return UploadLimits(max_bytes=int(self.max_upload_mb * 1024 * 1024), max_pixels=int(self.max_megapixels * 1e6))

    @property
    def credentials(self) -> Optional[tuple]:
        return tuple(self.auth.split(":", 1)) if self.auth else None


class Gate:
    """Bounded concurrency with a bounded waiting line: overload answers 503 at once, never piles up."""

    def __init__(self, running: int, waiting: int):
        self.sem = threading.BoundedSemaphore(running)
        self.lock, self.waiting, self.max_waiting = threading.Lock(), 0, waiting

    def __enter__(self):
        with self.lock:
            if self.waiting >= self.max_waiting + 1:
                raise OverflowError
            self.waiting += 1
        self.sem.acquire()
        with self.lock:
            self.waiting -= 1
        return self

    def __exit__(self, *exc):
        self.sem.release()


def create_app(pred: Predictor, cfg: ServeConfig):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # a server calls nobody home
    import gradio as gr
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPBasic, HTTPBasicCredentials


    app = FastAPI(title="qdeploy", description="FP32 vs INT8 image classification API")
    # with dynamic batching a model run serves up to max_batch requests: admit that many more at once
    batched = any(v.batcher is not None for v in pred.variants)
    gate, limits = Gate(cfg.max_concurrency * (cfg.max_batch if batched else 1), cfg.max_queue), cfg.limits
    basic = HTTPBasic(auto_error=False)

    def check_auth(creds: Optional[HTTPBasicCredentials] = Depends(basic)):
        if cfg.credentials is None:
            return
        ok = creds is not None and secrets.compare_digest(creds.username, cfg.credentials[0]) and \
            secrets.compare_digest(creds.password, cfg.credentials[1])
        if not ok:
            raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Basic"})


    metrics = ServeMetrics(lambda: gate.waiting)
    metrics.batching(pred.variants)
    add_metrics(app, metrics, check_auth)
    add_v2_routes(app, pred, gate, check_auth, limits.max_bytes, metrics)

    @app.exception_handler(ImageInputError)
    def _bad_image(_, exc: ImageInputError):
        return JSONResponse({"error": str(exc)}, status_code=413 if "limit is" in str(exc) else 400)

    @app.get("/healthz")
    def healthz():
        return {"ok": True, "variants": [v.name for v in pred.variants]}

    @app.get("/api/models", dependencies=[Depends(check_auth)])
    def models():
        return {"task": pred.task, "classes": pred.classes, "pickers": pred.pickers(),
                "preprocess": pred.spec.__dict__, "variants": [
            {"name": v.name, "file": v.info.path.name, "size_bytes": v.size_bytes, "runtime": v.session.runtime,
             **pred.facts.get(v.name, {})}
            for v in pred.variants]}

    @app.post("/api/predict", dependencies=[Depends(check_auth)])
    async def predict(request: Request, top_k: int = 3, style: Optional[int] = None, variant: Optional[str] = None,
                      timing: bool = False):
        """Classifiers: each variant's top-k (?variant=NAME: that model alone, for serving). Image-to-image: each variant's output image as base64 PNG with
        PSNR/SSIM against FP32 (JSON), or one variant's PNG itself with ?variant=NAME; ?style=K picks another
        one-hot extra input (the style) than the run's. Each model runs once per request (latency_ms is that
        run); ?timing=1 adds a warm-up and reports the median of several runs, as the page does."""
        if not get_task(pred.task).has_classes:
            choice = _choice(style)
            if variant is not None and variant not in [v.name for v in pred.variants]:
                raise HTTPException(422, f"variant must be one of {', '.join(v.name for v in pred.variants)}")
            data = await _read_upload(request, limits.max_bytes)
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(_transform_sync, data, choice, variant, timing)
        if not 1 <= top_k <= len(pred.classes):
            raise HTTPException(422, f"top_k must be in 1..{len(pred.classes)}")
        if variant is not None and variant not in [v.name for v in pred.variants]:
            raise HTTPException(422, f"variant must be one of {', '.join(v.name for v in pred.variants)}")
        data = await _read_upload(request, limits.max_bytes)
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(_predict_sync, data, top_k, timing, variant)

    def _choice(style):
        pickers = pred.pickers()
        if style is None:
            return None
        if len(pickers) != 1:
            raise HTTPException(422, "these models have no single one-hot input to pick with ?style=")
        name, p = next(iter(pickers.items()))
        if not 0 <= style < p["choices"]:
            raise HTTPException(422, f"style must be in 0..{p['choices'] - 1}")
        return {name: style}

    def _transform_sync(data: bytes, choice, variant, timing: bool):
        from fastapi.responses import Response

        img = load_image(data, limits)
        try:
            with gate:
                result = pred.transform(img, choice, timed=timing)
        except OverflowError:
            return JSONResponse({"error": "server busy: too many requests waiting; retry shortly"}, status_code=503)
        result.pop("seen")
        if variant is not None:
            row = next(r for r in result["variants"] if r["name"] == variant)
            return Response(_png(row["image"]), media_type="image/png")
        for r in result["variants"]:
            r["image_png_base64"] = base64.b64encode(_png(r.pop("image"))).decode()
        return result

    def _predict_sync(data: bytes, top_k: int, timing: bool, variant: Optional[str]):
        img = load_image(data, limits)
        try:
            with gate:
                result = pred.predict(img, top_k=top_k, timed=timing, only=variant)
        except OverflowError:
            return JSONResponse({"error": "server busy: too many requests waiting; retry shortly"}, status_code=503)
        result.pop("seen")
        for r in result["variants"]:
            metrics.observe("/api/predict", r["name"], r["latency_ms"] / 1e3)
        return result

    demo = build_ui(pred, limits)
    demo.queue(default_concurrency_limit=cfg.max_concurrency, max_size=cfg.max_queue)
    return gr.mount_gradio_app(app, demo, path="/", auth=cfg.credentials, max_file_size=limits.max_bytes,
                               css=PAGE_CSS, footer_links=["api"])


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


async def _read_upload(request, max_bytes: int) -> bytes:
    """Image bytes from multipart field 'file' or a raw image body; 413 past the size limit."""
    from fastapi import HTTPException

    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1)
        f = form.get("file")
        if f is None or isinstance(f, str):
            raise HTTPException(400, "send the image as multipart field 'file' (curl -F file=@photo.jpg)")
        data = await f.read(max_bytes + 1)
    else:
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_bytes:
                break
    if len(data) > max_bytes:
        raise HTTPException(413, f"upload exceeds the {max_bytes / 1024 / 1024:.0f} MB limit; resize or compress it")
    if not data:
        raise HTTPException(400, "empty request: send an image (curl -F file=@photo.jpg URL/api/predict)")
    return data


def serve(targets: list, cfg: ServeConfig, log=print) -> None:
    import uvicorn

    pred = Predictor.load(targets, threads=cfg.threads, latency_runs=cfg.latency_runs, target=cfg.target, log=log,
                          max_batch=cfg.max_batch, batch_delay_ms=cfg.batch_delay_ms)
    if cfg.share:
        log("WARNING: --share publishes this app on a public gradio.live URL that anyone with the link can open; "
            "the JSON API at /api/predict is not shared")

        demo = build_ui(pred, cfg.limits)
        demo.queue(default_concurrency_limit=cfg.max_concurrency, max_size=cfg.max_queue)
        demo.launch(server_name=cfg.host, server_port=cfg.port, share=True, auth=cfg.credentials, css=PAGE_CSS,
                    max_file_size=cfg.limits.max_bytes)
        return
    app = create_app(pred, cfg)
    log(f"serving {', '.join(v.name for v in pred.variants)} at http://{cfg.host}:{cfg.port}/ "
        f"(API: POST http://{cfg.host}:{cfg.port}/api/predict)")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
