"""What every route depends on: the served state (one per app, on app.state) and HTTP Basic auth.

FastAPI reads the signatures' annotations at run time, so this module does not use postponed annotations."""
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from .config import Gate, ServeConfig
from .images import UploadLimits
from .metrics import ServeMetrics
from .predictor import Predictor


@dataclass
class ServeState:
    pred: Predictor
    cfg: ServeConfig
    gate: Gate
    metrics: ServeMetrics

    @cached_property
    def limits(self) -> UploadLimits:
        return self.cfg.limits

    @cached_property
    def by_name(self) -> dict:
        """Each served model under its variant name and its aliases (a bundle's model names)."""
        return {n: v for v in self.pred.variants for n in (v.name, *v.aliases)}

    def variant_names(self) -> list:
        return [v.name for v in self.pred.variants]


def served(request: Request) -> ServeState:
    return request.app.state.qdeploy


_basic = HTTPBasic(auto_error=False)


def check_auth(request: Request, creds: Optional[HTTPBasicCredentials] = Depends(_basic)) -> None:
    want = served(request).cfg.credentials
    if want is None:
        return
    ok = creds is not None and secrets.compare_digest(creds.username, want[0]) and \
        secrets.compare_digest(creds.password, want[1])
    if not ok:
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Basic"})


async def read_capped(request: Request, max_bytes: int) -> "bytes | None":
    """The raw request body, or None once it passes max_bytes (the rest is not read)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    return body


BUSY = {"error": "server busy: too many requests waiting; retry shortly"}
