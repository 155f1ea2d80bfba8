"""The batch tab: many images or a zip, classified by every variant, in bounded memory.

A zip is never expanded into memory: entries are counted and their declared sizes summed *before*
anything is read, then read one at a time through a hard byte cap (declared sizes can lie), decoded,
reduced to the model's small input, and dropped. Peak memory is one entry plus the model inputs.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .images import ImageInputError, UploadLimits, load_image
from .predictor import Predictor


@dataclass(frozen=True)
class BatchLimits:
    max_items: int = 256                      # images per batch request
    max_total_bytes: int = 256 * 1024 * 1024  # decompressed bytes read from all archives together


class _Budget:
    def __init__(self, limits: BatchLimits):
        self.limits, self.items, self.bytes = limits, 0, 0


def _label_from_name(name: str, classes: list[str]) -> str | None:
    parts = Path(name).parts[:-1] + (Path(name).stem,)
    for part in reversed(parts):
        low = part.lower()
        for c in classes:
            if low == c.lower() or low.startswith(c.lower() + "_") or low.startswith(c.lower() + "-"):
                return c
    return None


def _read_capped(z: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes | None:
    """At most cap bytes of one entry, streamed; None when it is larger (whatever its header said)."""
    with z.open(info) as fh:
        data = fh.read(cap + 1)
    return None if len(data) > cap else data


def _zip_items(path: Path, upload: UploadLimits, budget: _Budget) -> Iterator[tuple[str, object]]:
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        yield path.name, ImageInputError("not a readable zip archive; re-create it")
        return
    with z:
        entries = [i for i in z.infolist() if not i.is_dir()]
        room = budget.limits.max_items - budget.items
        declared = sum(i.file_size for i in entries[:room])
        if len(entries) > room or budget.bytes + declared > budget.limits.max_total_bytes:
            yield path.name, ImageInputError(
                f"archive holds {len(entries)} files, {declared / 1e6:.0f} MB uncompressed; the batch limit is "
                f"{budget.limits.max_items} images and {budget.limits.max_total_bytes / 1e6:.0f} MB, so split it")
            return
        for info in entries:
            cap = min(upload.max_bytes, budget.limits.max_total_bytes - budget.bytes)
            data = _read_capped(z, info, cap) if info.file_size <= cap else None
            if data is None:
                yield info.filename, ImageInputError(f"entry is larger than the {cap / 1e6:.0f} MB left for it")
                continue
            budget.bytes += len(data)
            budget.items += 1
            yield info.filename, data


def batch_items(files, upload: UploadLimits, limits: BatchLimits | None = None) -> Iterator[tuple[str, object]]:
    """(name, bytes, path or an ImageInputError) per uploaded file or zip entry, lazily, within the limits."""
    budget = _Budget(limits or BatchLimits())
    for f in files or []:
        path = Path(getattr(f, "name", f))
        if budget.items >= budget.limits.max_items:
            yield path.name, ImageInputError(f"over the batch limit of {budget.limits.max_items} images; not read")
        elif path.suffix.lower() == ".zip":
            yield from _zip_items(path, upload, budget)
        else:
            budget.items += 1
            yield path.name, path


def _inputs(pred: Predictor, files, upload: UploadLimits, limits: BatchLimits | None):
    """Model inputs of the readable images (small), and a skip row for each unreadable one."""
    names, xs, skipped = [], [], []
    for name, src in batch_items(files, upload, limits):
        try:
            if isinstance(src, ImageInputError):
                raise src
            xs.append(pred.spec(load_image(src, upload)))
            names.append(name)
        except ImageInputError as exc:
            skipped.append([name, "", *["" for _ in pred.variants], f"skipped: {exc}"])
    return names, (np.concatenate(xs) if xs else None), skipped


def batch_handler(pred: Predictor, upload: UploadLimits, limits: BatchLimits | None = None):
    import gradio as gr

    def run_batch(files):
        if not files:
            raise gr.Error("no files given: choose several images or a .zip of images", print_exception=False)
        names, x, skipped = _inputs(pred, files, upload, limits)
        preds = pred.predict_batch(x)
        table, agree = [], 0
        for i, name in enumerate(names):
            per = [p[i] for p in preds]
            same = all(p == per[0] for p in per)
            agree += same
            table.append([name, _label_from_name(name, pred.classes) or "", *per, "agree" if same else "DISAGREE"])
        summary = [f"{len(names)} images classified, {len(skipped)} skipped. "
                   f"All variants agree on {agree}/{len(names)}."] if names else ["No readable images."]
        labels = [_label_from_name(n, pred.classes) for n in names]
        labelled = sum(lab is not None for lab in labels)
        if labelled:
            accs = [sum(p[i] == lab for i, lab in enumerate(labels)) for p in preds]
            summary.append(f"Accuracy on the {labelled} files whose name or folder names a class: " +
                           ", ".join(f"{v.name} {100 * a / labelled:.1f} %" for v, a in zip(pred.variants, accs)))
        return table + skipped, "\n\n".join(summary)

    return run_batch
