"""What a run starts from, and what that says about itself.

The artifact is the source of truth: an ONNX file's qdeploy metadata, or the `best.json` record that
`qdeploy train` writes beside its checkpoint, gives the architecture, classes and preprocessing. A flag
that contradicts them is an error unless `--override-preprocess` is given; a foreign ONNX file with no
metadata needs explicit flags; a bare checkpoint with neither falls back to the embedded default (seed
001's CIFAR-10 ResNet18 preprocessing).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import read_info
from .data import PreprocessFlags, PreprocessSpec
from .errors import CheckpointError, ConfigError
from .tasks import DEFAULT_TASK, get_task

DEFAULT_ARCH = "resnet18-cifar"


@dataclass
class SourceConfig:
    checkpoint: str | None = None
    onnx: str | None = None
    arch: str | None = None                  # None: from the checkpoint's record, else DEFAULT_ARCH
    arch_kwargs: dict = field(default_factory=dict)
    preprocess: PreprocessFlags = field(default_factory=PreprocessFlags)  # what the user gave
    classes: list[str] | None = None          # None: no --classes/--classes-file given
    override_preprocess: bool = False
    pretrained: str | None = None             # e.g. "imagenet": weights from an installed package, with --arch
    task: str = DEFAULT_TASK                  # image-to-image: pixels default to 0..1 (--norm unit)

    def __post_init__(self):
        if self.arch and not (self.checkpoint or self.onnx or self.pretrained):
            from .models.registry import missing_checkpoint_message

            raise ConfigError(missing_checkpoint_message(self.arch))
        if sum(map(bool, (self.checkpoint, self.onnx, self.pretrained))) != 1:
            raise ConfigError("give exactly one of --checkpoint (a state_dict), --onnx (an FP32 ONNX file) or "
                              "--arch NAME --pretrained imagenet")
        if self.pretrained and not self.arch:
            raise ConfigError("--pretrained needs --arch, e.g. --arch efficientnet-lite0 --pretrained imagenet")
        if self.onnx and self.arch:
            raise ConfigError("--arch applies to --checkpoint runs; an ONNX file carries its own graph")
        if self.onnx:
            from .models.packaged import resolve_onnx

            self.onnx = resolve_onnx(self.onnx)


@dataclass
class Source:
    """Resolved: what the run uses, and where each fact came from."""

    arch: str | None
    arch_kwargs: dict
    preprocess: PreprocessSpec
    classes: list[str] | None
    origin: dict                     # fact -> "metadata" | "record" | "flags" | "default"
    record: Path | None = None
    checkpoint: Path | None = None   # the weights file a torch model loads (None for ONNX)


def checkpoint_record(checkpoint: str | Path) -> tuple[Path, dict] | None:
    """The JSON record `qdeploy train` wrote beside a checkpoint (best.pth -> best.json), if any."""
    path = Path(checkpoint).with_suffix(".json")
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} beside the checkpoint is not valid JSON ({exc}); fix or remove it") from exc
    return (path, rec) if isinstance(rec, dict) else None


def _pick(what: str, stored, given, where: str, override: bool, flag: str):
    """The stored value wins; a different given value is an error unless overridden."""
    if stored is None:
        return given, "flags" if given is not None else None
    if given is None or given == stored:
        return stored, where
    if override:
        return given, "flags (override)"
    raise ConfigError(f"{flag} contradicts the {what} stored in the {where} ({_show(stored)} vs {_show(given)}); "
                      "drop the flag, or pass --override-preprocess to use yours")


def _pick_spec(stored: PreprocessSpec | None, flags: PreprocessFlags, where: str, override: bool):
    """Flags change the stored spec field by field; any change is a contradiction unless overridden."""
    given = flags.apply(stored) if flags.given() else None
    return _pick("preprocessing", stored, given, where, override, "--size/--mean/--std/--resize/--norm")


def _show(v) -> str:
    if isinstance(v, PreprocessSpec):
        return f"size {v.size}, mean {v.mean}, std {v.std}, {v.resize}"
    if isinstance(v, list):
        return f"{len(v)} classes: {', '.join(v[:3])}{', ...' if len(v) > 3 else ''}"
    return str(v)


def _flags(cfg: SourceConfig, stored) -> PreprocessFlags:
    """The user's flags, completed by the task's convention (tasks.Task.preprocess_flags)."""
    return get_task(cfg.task).preprocess_flags(cfg.preprocess, stored)

def _from_onnx(cfg: SourceConfig) -> Source:
    info = read_info(cfg.onnx)
    where = f"metadata of {Path(cfg.onnx).name}"
    spec, spec_from = _pick_spec(info.preprocess, _flags(cfg, info.preprocess), where, cfg.override_preprocess)
    if spec is None:
        raise ConfigError(f"{Path(cfg.onnx).name} carries no qdeploy preprocessing metadata; pass it explicitly: "
                          "--size N and --norm cifar10|imagenet (or --mean/--std, --resize)")
    classes, classes_from = _pick("classes", info.classes, cfg.classes, where, cfg.override_preprocess, "--classes")
    return Source(arch=None, arch_kwargs={}, preprocess=spec, classes=classes,
                  origin={"preprocess": spec_from, "classes": classes_from or "data"})


def _from_checkpoint(cfg: SourceConfig) -> Source:
    found = checkpoint_record(cfg.checkpoint)
    rec_path, rec = found if found else (None, {})
    where = f"record {rec_path.name}" if rec_path else ""
    stored_spec = PreprocessSpec(**rec["preprocess"]) if "preprocess" in rec else None
    spec, spec_from = _pick_spec(stored_spec, _flags(cfg, stored_spec), where, cfg.override_preprocess)
    arch, arch_from = _pick("architecture", rec.get("arch"), cfg.arch, where, False, "--arch")
    classes, classes_from = _pick("classes", rec.get("classes"), cfg.classes, where, cfg.override_preprocess,
                                  "--classes")
    return Source(arch=arch or DEFAULT_ARCH, arch_kwargs=cfg.arch_kwargs or rec.get("arch_kwargs", {}),
                  preprocess=spec or PreprocessSpec(), classes=classes,
                  origin={"preprocess": spec_from or "default", "arch": arch_from or "default",
                          "classes": classes_from or "data"}, record=rec_path, checkpoint=Path(cfg.checkpoint))


def _from_pretrained(cfg: SourceConfig) -> Source:
    """Weights from an installed package; their own preprocessing unless flags override it."""
    from .models import pretrained

    weights, stored = pretrained(cfg.arch, cfg.pretrained)
    where = f"{cfg.pretrained} weights of {cfg.arch}"
    spec, spec_from = _pick_spec(stored, cfg.preprocess, where, cfg.override_preprocess)
    return Source(arch=cfg.arch, arch_kwargs=cfg.arch_kwargs, preprocess=spec, classes=cfg.classes,
                  origin={"preprocess": spec_from, "arch": "flags", "classes": "flags" if cfg.classes else "data"},
                  record=None, checkpoint=weights)


def resolve_source(cfg: SourceConfig) -> Source:
    if cfg.pretrained:
        return _from_pretrained(cfg)
    return _from_onnx(cfg) if cfg.onnx else _from_checkpoint(cfg)
