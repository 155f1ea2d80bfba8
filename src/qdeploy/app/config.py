"""`qdeploy serve`'s settings and its admission gate: no web framework imported here, so the CLI reads the defaults
without loading FastAPI."""
from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from ..targets import check_targets
from .images import UploadLimits


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
    page: bool = True               # False: the KServe v2 and JSON routes alone, no Gradio (qdeploy[serve-api])

    def __post_init__(self):
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"port {self.port} is out of range 0..65535")
        if self.auth is not None and (":" not in self.auth or not self.auth.split(":", 1)[0]
                                      or not self.auth.split(":", 1)[1]):
            raise ConfigError("credentials must look like user:password (--auth-file's first line, QDEPLOY_AUTH or "
                              "--auth), with neither part empty")
        if self.max_concurrency < 1 or self.max_queue < 0:
            raise ConfigError("max concurrency must be >= 1 and max queue >= 0")
        if self.max_batch < 1 or not 0 <= self.batch_delay_ms <= 1000:
            raise ConfigError("--max-batch must be >= 1 and --batch-delay-ms in 0..1000")
        if self.target is not None:
            check_targets([self.target])
        if self.share and not self.page:
            raise ConfigError("--share publishes the Gradio page; --no-page serves the API alone: drop one")

    @property
    def limits(self) -> UploadLimits:
        return UploadLimits(max_bytes=int(self.max_upload_mb * 1024 * 1024), max_pixels=int(self.max_megapixels * 1e6))

    @property
    def credentials(self) -> Optional[tuple]:
        return tuple(self.auth.split(":", 1)) if self.auth else None


AUTH_ENV = "QDEPLOY_AUTH"
MAX_AUTH_FILE_BYTES = 4096


def resolve_auth(on_argv: Optional[str], auth_file: Optional[str | Path],
                 environ: Optional[dict] = None) -> tuple[Optional[str], list[str]]:
    """The server's user:password from exactly one place: --auth-file (its first line), the QDEPLOY_AUTH variable,
    or --auth (accepted with a warning: argv is visible to every user of the machine in `ps`). Returns the
    credentials (None: no auth) and the warnings to print."""
    environ = os.environ if environ is None else environ
    given = [n for n, v in (("--auth", on_argv), ("--auth-file", auth_file), (AUTH_ENV, environ.get(AUTH_ENV)))
             if v]
    if len(given) > 1:
        raise ConfigError(f"credentials given twice ({' and '.join(given)}); keep one: --auth-file or {AUTH_ENV}")
    warnings = []
    if on_argv:
        warnings.append(f"WARNING: --auth puts the password on the command line, where `ps` shows it to every user "
                        f"of this machine; use --auth-file FILE or the {AUTH_ENV} variable")
        return on_argv, warnings
    if auth_file:
        path = Path(auth_file)
        if not path.is_file():
            raise ConfigError(f"--auth-file {path} not found; write user:password on its first line")
        if path.stat().st_size > MAX_AUTH_FILE_BYTES:
            raise ConfigError(f"--auth-file {path} is over {MAX_AUTH_FILE_BYTES} bytes; it holds one user:password line")
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(f"WARNING: {path} is readable by other users (mode {stat.S_IMODE(path.stat().st_mode):o});"
                            f" chmod 600 {path}")
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
        return (lines[0].strip() if lines else ""), warnings
    return environ.get(AUTH_ENV) or None, warnings


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
