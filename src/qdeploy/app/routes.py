"""qdeploy's own JSON API: /healthz, /api/models, /api/predict and /metrics, as module-level routes on one router.

FastAPI reads the route signatures at run time, so this module does not use postponed annotations."""
import base64
import io
from typing import Optional

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..tasks import get_task
from .deps import BUSY, ServeState, check_auth, read_capped, served
from .images import load_image

router = APIRouter()


@router.get("/healthz")
def healthz(s: ServeState = Depends(served)):
    return {"ok": True, "variants": s.variant_names()}


@router.get("/api/models", dependencies=[Depends(check_auth)])
def models(s: ServeState = Depends(served)):
    pred = s.pred
    return {"task": pred.task, "classes": pred.classes, "pickers": pred.pickers(), "preprocess": pred.spec.__dict__,
            "variants": [{"name": v.name, "file": v.info.path.name, "size_bytes": v.size_bytes,
                          "runtime": v.session.runtime, **pred.facts.get(v.name, {})} for v in pred.variants]}


@router.get("/metrics", dependencies=[Depends(check_auth)])
def metrics_route(s: ServeState = Depends(served)):
    body, ctype = s.metrics.text()
    return Response(body, media_type=ctype)


@router.post("/api/predict", dependencies=[Depends(check_auth)])
async def predict(request: Request, top_k: int = 3, style: Optional[int] = None, variant: Optional[str] = None,
                  timing: bool = False, s: ServeState = Depends(served)):
    """Classifiers: each variant's top-k (?variant=NAME: that model alone, for serving). Image-to-image: each
    variant's output image as base64 PNG with PSNR/SSIM against FP32 (JSON), or one variant's PNG itself with
    ?variant=NAME; ?style=K picks another one-hot extra input (the style) than the run's. Each model runs once per
    request (latency_ms is that run); ?timing=1 adds a warm-up and reports the median of several runs, as the page
    does."""
    classes = get_task(s.pred.task).has_classes
    choice = None if classes else _choice(s, style)
    if classes and not 1 <= top_k <= len(s.pred.classes):
        raise HTTPException(422, f"top_k must be in 1..{len(s.pred.classes)}")
    if variant is not None and variant not in s.variant_names():
        raise HTTPException(422, f"variant must be one of {', '.join(s.variant_names())}")
    data = await read_upload(request, s.limits.max_bytes)
    if classes:
        return await run_in_threadpool(_predict_sync, s, data, top_k, timing, variant)
    return await run_in_threadpool(_transform_sync, s, data, choice, variant, timing)


def _choice(s: ServeState, style: Optional[int]):
    pickers = s.pred.pickers()
    if style is None:
        return None
    if len(pickers) != 1:
        raise HTTPException(422, "these models have no single one-hot input to pick with ?style=")
    name, p = next(iter(pickers.items()))
    if not 0 <= style < p["choices"]:
        raise HTTPException(422, f"style must be in 0..{p['choices'] - 1}")
    return {name: style}


def _transform_sync(s: ServeState, data: bytes, choice, variant, timing: bool):
    img = load_image(data, s.limits)
    try:
        with s.gate:
            result = s.pred.transform(img, choice, timed=timing)
    except OverflowError:
        return JSONResponse(BUSY, status_code=503)
    result.pop("seen")
    if variant is not None:
        row = next(r for r in result["variants"] if r["name"] == variant)
        return Response(_png(row["image"]), media_type="image/png")
    for r in result["variants"]:
        r["image_png_base64"] = base64.b64encode(_png(r.pop("image"))).decode()
    return result


def _predict_sync(s: ServeState, data: bytes, top_k: int, timing: bool, variant: Optional[str]):
    img = load_image(data, s.limits)
    try:
        with s.gate:
            result = s.pred.predict(img, top_k=top_k, timed=timing, only=variant)
    except OverflowError:
        return JSONResponse(BUSY, status_code=503)
    result.pop("seen")
    for r in result["variants"]:
        s.metrics.observe("/api/predict", r["name"], r["latency_ms"] / 1e3)
    return result


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """Image bytes from multipart field 'file' or a raw image body; 413 past the size limit."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1)
        f = form.get("file")
        if f is None or isinstance(f, str):
            raise HTTPException(400, "send the image as multipart field 'file' (curl -F file=@photo.jpg)")
        data = await f.read(max_bytes + 1)
    else:
        data = await read_capped(request, max_bytes)
    if data is None or len(data) > max_bytes:
        raise HTTPException(413, f"upload exceeds the {max_bytes / 1024 / 1024:.0f} MB limit; resize or compress it")
    if not data:
        raise HTTPException(400, "empty request: send an image (curl -F file=@photo.jpg URL/api/predict)")
    return data
