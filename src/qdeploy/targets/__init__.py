"""Targets: where a model runs (runtime x device x online/offline). A new runtime is one module here,
registered in TARGETS; the pipeline, evaluation, benchmarks, `qdeploy compile` and the app only call
`get_target` / `target_for`."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..formats.sessions import default_threads
from ..registry import lookup
from .aoti import PT2_SUFFIX, AotiCpu
from .base import Session, Target, run_batched
from .openvino import BLOB_SUFFIX, OpenVinoBf16, OpenVinoCpu
from .ort import ORT_SUFFIX, OrtCpu

TARGETS: dict[str, type[Target]] = {OrtCpu.name: OrtCpu, OpenVinoCpu.name: OpenVinoCpu, OpenVinoBf16.name: OpenVinoBf16,
                                    AotiCpu.name: AotiCpu}
DEFAULT_TARGET = OrtCpu.name
ORT_CPU, OPENVINO_CPU, AOTI_CPU = OrtCpu.name, OpenVinoCpu.name, AotiCpu.name   # for code that names one
# files only one target runs (a runtime's own format); .onnx runs on any target that reads ONNX
OWN_FORMATS = {ORT_SUFFIX: OrtCpu.name, BLOB_SUFFIX: OpenVinoCpu.name, ".xml": OpenVinoCpu.name,
               PT2_SUFFIX: AotiCpu.name}
INSTALL = {OpenVinoCpu.name: "pip install 'qdeploy[openvino]'", AotiCpu.name: "pip install 'qdeploy[torch]'",
           OpenVinoBf16.name: "it needs OpenVINO (pip install 'qdeploy[openvino]') and a CPU with native bf16 "
                              "(lscpu flags avx512_bf16 or amx_bf16)"}


def get_target(name: str = DEFAULT_TARGET) -> Target:
    return lookup(TARGETS, name, "target")


def target_for(path, requested: str | None = None) -> str:
    """The target that runs `path`: its own runtime for a runtime-specific format, else `requested`."""
    own = OWN_FORMATS.get(Path(path).suffix)
    if own and requested and requested != own:

        raise ConfigError(f"{Path(path).name} is {own}'s own format; run it with --target {own} (or pass the .onnx)")
    return own or requested or DEFAULT_TARGET


def runs_on(path, target: str) -> bool:
    """Whether `target` can open `path`: its own format, or ONNX on a target that reads ONNX."""
    suffix = Path(path).suffix
    if suffix in OWN_FORMATS:
        return OWN_FORMATS[suffix] == target
    return suffix == ".onnx" and get_target(target).mode == "online"


INSTALLED = "installed"   # --targets' default: every installed online CPU target (installed_targets)


def installed_targets() -> tuple[str, ...]:
    """Every online target this machine can run, ONNX Runtime first: OpenVINO where it is installed, its bf16 form
    where the CPU also has native bf16 (targets/openvino.py). The default run weighs each one."""
    return tuple(n for n, t in TARGETS.items() if t.mode == "online" and t().available())


def check_targets(names, online: bool = True) -> tuple[str, ...]:
    """Known and installed targets, or one clear error saying what to install. online=True: targets that run
    ONNX files as they are (`qdeploy run --targets`); an offline-only target is reached through `qdeploy compile`."""

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if list(names) == [INSTALLED]:
        return installed_targets()
    out = []
    for n in names:
        if n == INSTALLED:
            raise ConfigError(f"'{INSTALLED}' stands for every installed target on its own; do not list it with others")
        t = get_target(n)
        if online and t.mode == "offline":
            raise ConfigError(f"target '{n}' runs compiled packages only; build them after the run with "
                              f"'qdeploy compile RUN_DIR --target {n}'")
        if not t.available():
            raise ConfigError(f"target '{n}' is not available here; {INSTALL.get(n, 'install its runtime')} (or drop "
                              "it from --targets)")
        out.append(n)
    return tuple(dict.fromkeys(out))


def open_session(path, threads: int | None = None, spinning: bool = True, target: str | None = None) -> Session:
    """A session on `target` (default: the one the file's format runs on); threads None: settings.default_threads()
    ($QDEPLOY_THREADS), else the runtime's default."""
    name = target_for(path, target) if not isinstance(path, bytes) else (target or DEFAULT_TARGET)
    return get_target(name).open(path, threads=threads or default_threads(), spinning=spinning)


__all__ = ["AOTI_CPU", "DEFAULT_TARGET", "INSTALLED", "installed_targets", "OPENVINO_CPU", "ORT_CPU", "OWN_FORMATS", "TARGETS", "Session", "Target",
           "check_targets", "get_target", "open_session", "run_batched", "runs_on", "target_for"]
