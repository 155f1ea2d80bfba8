"""What every route depends on: the served state (one per app, on app.state) and HTTP Basic auth.

FastAPI reads the signatures' annotations at run time, so this module does not use postponed annotations."""
import base64
import binascii
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

from fastapi import HTTPException, Request

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


def _basic_credentials(request: Request) -> Optional[tuple]:
    """(user, password) of an HTTP Basic header, decoded as UTF-8 (RFC 7617's charset; FastAPI's HTTPBasic takes
    ASCII only, so a password with an accent could never match), or None."""
    scheme, _, param = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or len(param) > 4096:
        return None
    try:
        user, sep, password = base64.b64decode(param, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (user, password) if sep else None


def check_auth(request: Request) -> None:
    want = served(request).cfg.credentials
    if want is None:
        return
    creds = _basic_credentials(request)
    # bytes, not str (compare_digest refuses non-ASCII str); both parts are always compared, so the time does not
    # say which one was wrong
    ok = creds is not None
    if ok:
        user = secrets.compare_digest(creds[0].encode(), want[0].encode())
        password = secrets.compare_digest(creds[1].encode(), want[1].encode())
        ok = user and password
    if not ok:
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": 'Basic charset="UTF-8"'})


async def read_capped(request: Request, max_bytes: int) -> "bytes | None":
    """The raw request body, or None once it passes max_bytes (the rest is not read)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    return body


BUSY = {"error": "server busy: too many requests waiting; retry shortly"}
