"""GET /metrics in Prometheus' text format (prometheus-client): requests by route and status, failed requests by
kind, inference time per route and variant, and the number of requests waiting for an inference slot.

Labels come from qdeploy's own route templates and variant names, never from request paths or bodies, so a
client cannot grow the label set (unmatched paths count as route "other")."""
from __future__ import annotations

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServeMetrics:
    def __init__(self, waiting):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("qdeploy_requests", "HTTP requests by route template and status code",
                                ["route", "status"], registry=self.registry)
        self.errors = Counter("qdeploy_errors", "Failed requests by kind: client (4xx), overload (503), server (5xx)",
                              ["route", "kind"], registry=self.registry)
        self.inference = Histogram("qdeploy_inference_seconds", "Model run time per request, by route and variant",
                                   ["route", "variant"], buckets=BUCKETS, registry=self.registry)
        queue = Gauge("qdeploy_queue_depth", "Requests waiting for an inference slot", registry=self.registry)
        queue.set_function(waiting)

    def batching(self, variants) -> None:
        """Dynamic batching counters per variant, read from each batcher when scraped (mean batch = rows/runs)."""
        from prometheus_client import Gauge

        reqs = Gauge("qdeploy_batched_requests", "Serving requests that went through the batcher",
                     ["variant"], registry=self.registry)
        runs = Gauge("qdeploy_batch_runs", "Model runs made by the batcher", ["variant"], registry=self.registry)
        rows = Gauge("qdeploy_batch_rows", "Images in those runs", ["variant"], registry=self.registry)
        largest = Gauge("qdeploy_batch_largest", "Largest batch run so far", ["variant"], registry=self.registry)
        for v in variants:
            if v.batcher is not None:
                st = v.batcher.stats
                reqs.labels(variant=v.name).set_function(lambda st=st: st.requests)
                runs.labels(variant=v.name).set_function(lambda st=st: st.runs)
                rows.labels(variant=v.name).set_function(lambda st=st: st.rows)
                largest.labels(variant=v.name).set_function(lambda st=st: st.largest)

    def observe(self, route: str, variant: str, seconds: float) -> None:
        self.inference.labels(route=route, variant=variant).observe(seconds)

    def count(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        if status >= 400:
            kind = "overload" if status == 503 else "client" if status < 500 else "server"
            self.errors.labels(route=route, kind=kind).inc()

    def text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def count_requests(app, metrics: ServeMetrics) -> None:
    """A middleware that counts every request under its route template (GET /metrics serves the counts)."""
    @app.middleware("http")
    async def _count(request, call_next):
        try:
            response = await call_next(request)
            status = response.status_code
        except Exception:
            status = 500
            raise
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", None)
            metrics.count(path if path and path != "/" and not path.startswith("/gradio") else "other", status)
        return response
