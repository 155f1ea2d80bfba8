"""The served app: qdeploy's JSON API (routes.py), the KServe v2 protocol (kserve.py) and /metrics beside the
Gradio page, over one set of shared sessions. Routes are module-level functions on routers; what they serve is
one ServeState on app.state."""
import os

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from . import kserve, routes
from .config import Gate, ServeConfig
from .deps import ServeState
from .images import ImageInputError
from .metrics import ServeMetrics, count_requests
from .predictor import Predictor
from .ui import PAGE_CSS, build_ui

__all__ = ["ServeConfig", "create_app", "serve"]


def _bad_image(_, exc: ImageInputError):
    return JSONResponse({"error": str(exc)}, status_code=413 if "limit is" in str(exc) else 400)


def create_app(pred: Predictor, cfg: ServeConfig):
    app = FastAPI(title="qdeploy", description="FP32 vs INT8 image classification API")
    # with dynamic batching a model run serves up to max_batch requests: admit that many more at once
    batched = any(v.batcher is not None for v in pred.variants)
    gate = Gate(cfg.max_concurrency * (cfg.max_batch if batched else 1), cfg.max_queue)
    metrics = ServeMetrics(lambda: gate.waiting)
    metrics.batching(pred.variants)
    app.state.qdeploy = ServeState(pred=pred, cfg=cfg, gate=gate, metrics=metrics)
    count_requests(app, metrics)
    app.add_exception_handler(ImageInputError, _bad_image)
    app.include_router(routes.router)
    app.include_router(kserve.router)
    if not cfg.page:
        app.add_api_route("/", _api_index, methods=["GET"])
        return app
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # a server calls nobody home
    import gradio as gr

    demo = build_ui(pred, cfg.limits)
    demo.queue(default_concurrency_limit=cfg.max_concurrency, max_size=cfg.max_queue)
    return gr.mount_gradio_app(app, demo, path="/", auth=cfg.credentials, max_file_size=cfg.limits.max_bytes,
                               css=PAGE_CSS, footer_links=["api"])


def _api_index():
    """`--no-page`: the root says where the API is (there is no page to show)."""
    return {"page": None, "routes": ["/v2", "/v2/models/{name}", "/v2/models/{name}/infer", "/api/models",
                                     "/api/predict", "/metrics", "/healthz"]}


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
