"""qdeploy's metadata in an OpenVINO IR: stored in the model's rt_info under META_KEY."""
from __future__ import annotations

from pathlib import Path

META_KEY = "qdeploy"


def ir_meta(compiled_or_model) -> dict:
    """qdeploy's metadata stored in an OpenVINO model's rt_info ({} when there is none)."""
    try:
        info = compiled_or_model.get_rt_info()
        if META_KEY not in info:
            return {}
        node = info[META_KEY]
        return {k: node[k].astype(str) for k in node.keys()} if hasattr(node, "keys") else {}
    except Exception:
        return {}


def read_ir_meta(path: str | Path) -> dict:
    """ir_meta of an IR file (.xml beside its .bin)."""
    import openvino as ov  # optional and heavy: only where an IR is read

    return ir_meta(ov.Core().read_model(str(path)))
