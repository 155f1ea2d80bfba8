"""Resolve an architecture (built-in name or `file.py:ClassName`) and load a state_dict into it."""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..data import PreprocessSpec
from ..errors import ArchitectureError, CheckpointError
from .efficientnet_lite import efficientnet_lite0, imagenet_weights
from .mobilenetv2_cifar import mobilenetv2_cifar
from .resnet_cifar import resnet18_cifar, resnet20_cifar, resnet56_cifar
from .zoo import LIBRARY, SIZED, STATE_KWARGS, ZOO

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18-cifar": resnet18_cifar,
    "resnet20-cifar": resnet20_cifar,
    "resnet56-cifar": resnet56_cifar,
    "mobilenetv2-cifar": mobilenetv2_cifar,
    "efficientnet-lite0": efficientnet_lite0,
    **ZOO,   # torchvision's and timm's layouts, under those libraries' names (models/zoo)
}


def missing_checkpoint_message(arch: str) -> str:
    """What to pass when an architecture is named without weights (nothing is downloaded here)."""
    if arch in LIBRARY:
        lib = LIBRARY[arch]
        how = (f"timm.create_model('{arch}', pretrained=True, num_classes=N)" if lib == "timm"
               else f"torchvision.models.{arch}(weights='DEFAULT')")
        return (f"--arch {arch} needs --checkpoint: qdeploy downloads no weights. Save a {lib} state_dict where "
                f"{lib} is installed (torch.save({how}.state_dict(), 'model.pth')), or train one here with "
                f"qdeploy train --arch {arch}; then pass --checkpoint model.pth")
    return (f"--arch {arch} needs --checkpoint path/to/state_dict.pth"
            + (f" (or --pretrained {', '.join(s for a, s in PRETRAINED if a == arch)})"
               if any(a == arch for a, _ in PRETRAINED) else ""))


def _lite_imagenet_spec():
    from .efficientnet_lite import LITE_MEAN, LITE_STD

    return PreprocessSpec(size=224, mean=LITE_MEAN, std=LITE_STD, resize="shorter-side-crop", interpolation="bilinear")


# (arch, source) -> (weights file finder, the preprocessing those weights were trained with); weights come
# from installed packages, never downloaded
PRETRAINED = {("efficientnet-lite0", "imagenet"): (imagenet_weights, _lite_imagenet_spec)}


def pretrained(arch: str, source: str):
    """(weights path, PreprocessSpec) of a pretrained model, or one clear error."""
    if (arch, source) not in PRETRAINED:
        known = ", ".join(f"--arch {a} --pretrained {s}" for a, s in PRETRAINED)
        raise ArchitectureError(f"no '{source}' weights for '{arch}'; available: {known}")
    weights, spec = PRETRAINED[(arch, source)]
    return weights(arch), spec()


def _load_user_class(spec: str):
    path_str, _, cls_name = spec.rpartition(":")
    path = Path(path_str)
    if not path.is_file():
        raise ArchitectureError(f"architecture file {path} not found; pass --arch path/to/file.py:ClassName")
    mod_name = f"qdeploy_user_arch_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # user code: report any failure as one line
        raise ArchitectureError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ArchitectureError(f"{path} defines no '{cls_name}'; check the name after ':' in --arch")
    return cls


def _parse_kwargs(arch_kwargs: dict | str | None) -> dict:
    """--arch-kwargs as a dict: given as one, or as JSON text (bad JSON is one ArchitectureError)."""
    if isinstance(arch_kwargs, str):
        try:
            return json.loads(arch_kwargs) if arch_kwargs.strip() else {}
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"--arch-kwargs is not valid JSON ({exc.msg}); pass e.g. '{{\"width\": 2}}'") from exc
    return dict(arch_kwargs or {})


def build_model(arch: str, num_classes: int | None = None, arch_kwargs: dict | str | None = None,
                input_size: int | None = None) -> nn.Module:
    """Instantiate a built-in architecture or a user class given as `file.py:ClassName`. `input_size` (the run's
    --size) reaches architectures whose shapes depend on it (ViT positions, Swin windows) unless the kwargs say."""
    kwargs = _parse_kwargs(arch_kwargs)
    if arch in ARCHITECTURES:
        if num_classes is not None:
            kwargs.setdefault("num_classes", num_classes)
        if arch in SIZED and input_size is not None:
            kwargs.setdefault("img_size", input_size)
        factory = ARCHITECTURES[arch]
    elif ":" in arch and arch.rpartition(":")[0].endswith(".py"):
        factory = _load_user_class(arch)
    else:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ArchitectureError(f"unknown architecture '{arch}'; use one of {known} or path/to/file.py:ClassName")
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(f"cannot build '{arch}' with {kwargs}: {exc}; fix --arch-kwargs or --size") from exc


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict safely (weights_only) from the layouts people actually save."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass --checkpoint path/to/best_model.pth")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} ({first[:160]}); it must be a torch.save'd state_dict of tensors"
        ) from exc
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} holds no state_dict of tensors; save model.state_dict() (or a dict with 'state_dict')"
        )
    prefix = "module."
    if all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _mismatch_message(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Missing/unexpected/mis-shaped keys as torch itself judges them (BatchNorm's fill-in of old state
    dicts included), on a throw-away copy of the model."""

    expected = model.state_dict()
    shaped = [f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    bad = {s.split(" ")[0] for s in shaped}
    res = copy.deepcopy(model).load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=False)
    missing = [k for k in res.missing_keys if k not in bad]
    if not (missing or res.unexpected_keys or shaped):
        return None

    def part(label, items):
        return f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})" if items else None

    parts = [p for p in (part("missing", missing), part("unexpected", list(res.unexpected_keys)),
                         part("mis-shaped", shaped)) if p]
    return "; ".join(parts)


def head_classes(state: dict[str, torch.Tensor]) -> int | None:
    """Number of outputs of the last 2-D weight (the classifier head), if one can be found."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(weights[-1].shape[0]) if weights else None


def load_model(arch: str, checkpoint: str | Path, num_classes: int | None = None,
               arch_kwargs: dict | str | None = None, input_size: int | None = None) -> nn.Module:
    """Build `arch`, load `checkpoint` into it strictly, and return it in eval mode. Widths, depths, patch and
    window sizes a zoo checkpoint implies are read from it; the user's --arch-kwargs win over them."""
    state = load_checkpoint(checkpoint)
    if num_classes is None:
        num_classes = head_classes(state)
    if arch in STATE_KWARGS:
        arch_kwargs = {**STATE_KWARGS[arch](state), **_parse_kwargs(arch_kwargs)}
    model = build_model(arch, num_classes=num_classes, arch_kwargs=arch_kwargs, input_size=input_size)
    try:
        # torch's own compatibility rules decide: e.g. BatchNorm fills in `num_batches_tracked` for state
        # dicts saved by older PyTorch (no version metadata), which a plain key comparison would reject
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        problem = _mismatch_message(model, state) or str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(
            f"checkpoint {Path(checkpoint).name} does not fit architecture '{arch}': {problem}; "
            "pick the --arch the checkpoint was trained with"
        ) from None
    trained = getattr(model, "input_size", None)
    if trained is not None and input_size is not None and int(trained) != int(input_size):
        raise CheckpointError(f"checkpoint {Path(checkpoint).name} is a {arch} for {trained}x{trained} images (its "
                              f"position embeddings say so) but the run's input size is {input_size}; pass --size "
                              f"{trained}")
    return model.eval()
