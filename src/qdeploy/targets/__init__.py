"""Targets: where a model runs (runtime x device x online/offline). A new runtime is one module here,
registered in TARGETS; the pipeline, evaluation, benchmarks and the app only call `get_target`."""
from __future__ import annotations

from ..registry import lookup
from .base import Session, Target, run_batched
from .openvino import OpenVinoCpu
from .ort import OrtCpu

TARGETS: dict[str, type[Target]] = {OrtCpu.name: OrtCpu, OpenVinoCpu.name: OpenVinoCpu}
DEFAULT_TARGET = OrtCpu.name


def get_target(name: str = DEFAULT_TARGET) -> Target:
    return lookup(TARGETS, name, "target")


def check_targets(names) -> tuple[str, ...]:
    """Known and installed targets, or one clear error saying what to install."""
    from ..errors import ConfigError

    out = []
    for n in names:
        t = get_target(n)
        if not t.available():
            raise ConfigError(f"target '{n}' is not installed here; pip install 'qdeploy[openvino]' (or drop it from "
                              "--targets)")
        out.append(n)
    return tuple(dict.fromkeys(out))


def open_session(path, threads: int | None = None, spinning: bool = True, target: str = DEFAULT_TARGET) -> Session:
    return get_target(target).open(path, threads=threads, spinning=spinning)


__all__ = ["DEFAULT_TARGET", "TARGETS", "Session", "Target", "check_targets", "get_target", "open_session",
           "run_batched"]
