"""Turn untrusted uploads into RGB PIL images, or one readable error. Never a stack trace."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import QDeployError


class ImageInputError(QDeployError):
    """An upload that cannot be used as an image; the message is shown to the user."""


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000


def _read(source, limits: UploadLimits) -> bytes:
    if source is None:
        raise ImageInputError("no image given: upload, drop, paste or capture an image first")
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"upload {path.name} is missing on the server; upload it again")
        if path.stat().st_size > limits.max_bytes:
            raise ImageInputError(f"file is {path.stat().st_size / 1e6:.1f} MB; the limit is "
                                  f"{limits.max_bytes / 1e6:.0f} MB, so resize or compress it")
        data = path.read_bytes()
    if len(data) > limits.max_bytes:
        raise ImageInputError(f"file is {len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.0f} MB, "
                              "so resize or compress it")
    if not data:
        raise ImageInputError("the file is empty; upload a JPEG, PNG, GIF, BMP or WebP image")
    return data


def _to_rgb(img):
    """Any PIL mode -> RGB: alpha composited on white, palette/CMYK/16-bit/grayscale converted."""

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):

        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray((arr / hi * 255.0).clip(0, 255).astype("uint8"), "L")
    elif img.mode == "F":

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = arr.min(), arr.max()
        img = Image.fromarray(((arr - lo) / ((hi - lo) or 1) * 255).astype("uint8"), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")


def load_image(source, limits: UploadLimits | None = None):
    """bytes or a path -> RGB PIL image (EXIF rotation applied, first frame of animations)."""

    limits = limits or UploadLimits()
    data = _read(source, limits)
    try:
        # The size check runs on the header, before any pixel is decoded; PIL's own
        # DecompressionBombError (past 2x its global limit) is caught below as well.
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > limits.max_pixels:
            raise ImageInputError(f"image is {w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is "
                                  f"{limits.max_pixels / 1e6:.0f} MP, so downscale it")
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP: the first frame
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img)
    except ImageInputError:
        raise
    except Image.DecompressionBombError:
        raise ImageInputError(f"image is larger than {limits.max_pixels / 1e6:.0f} megapixels (possible decompression "
                              "bomb); downscale it") from None
    except UnidentifiedImageError:
        raise ImageInputError("this file is not an image qdeploy can read (unknown format, or its header is corrupt); "
                              "upload a JPEG, PNG, GIF, BMP or WebP") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"the image is corrupt or truncated ({str(exc)[:80]}); re-save or re-export it") from None
