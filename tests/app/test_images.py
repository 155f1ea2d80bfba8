"""Every bad or odd upload -> an RGB image or one readable ImageInputError."""
import io

import numpy as np
import pytest
from PIL import Image

from qdeploy.app.images import ImageInputError, UploadLimits, load_image


def encode(img, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(cifar):
    return Image.open(sorted((cifar / "test" / "cat").iterdir())[0]).convert("RGB")


def test_jpeg_path_and_bytes(photo, tmp_path):
    p = tmp_path / "cat.jpg"
    photo.save(p)
    assert load_image(p).size == (32, 32) and load_image(p.read_bytes()).mode == "RGB"


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1"])
def test_modes_become_rgb(photo, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    img = photo.convert(mode)
    out = load_image(encode(img, fmt))
    assert out.mode == "RGB" and out.size == photo.size


def test_rgba_composited_on_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    assert load_image(encode(img, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_16bit_png_scaled_not_clipped():
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    out = np.asarray(load_image(encode(Image.fromarray(arr), "PNG")))
    assert out.max() == 255 and out.min() == 0 and out.shape == (8, 8, 3)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, g, b = load_image(data).getpixel((5, 5))
    assert r > 200 and b < 50


def test_exif_rotation_applied():
    img = Image.new("RGB", (40, 20), (0, 255, 0))
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees on display
    assert load_image(encode(img, "JPEG", exif=exif.tobytes())).size == (20, 40)


@pytest.mark.parametrize("data,fragment", [
    (b"", "empty"),
    (b"hello, I am a text file", "not an image"),
    (b"%PDF-1.4 fake", "not an image"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20, "header is corrupt"),
])
def test_bad_files(data, fragment):
    with pytest.raises(ImageInputError, match=fragment):
        load_image(data)


def test_truncated_jpeg(photo):
    data = encode(photo.resize((200, 200)), "JPEG")
    with pytest.raises(ImageInputError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_truncated_png(photo):
    data = encode(photo.resize((200, 200)), "PNG")
    with pytest.raises(ImageInputError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_size_and_pixel_limits(photo):
    with pytest.raises(ImageInputError, match="limit is"):
        load_image(b"\x00" * 2048, UploadLimits(max_bytes=1024))
    big = encode(Image.new("L", (3000, 3000)), "PNG")  # 9 MP, compresses to a few KB: a bomb in miniature
    with pytest.raises(ImageInputError, match="megapixels"):
        load_image(big, UploadLimits(max_pixels=4_000_000))


def test_missing_upload():
    with pytest.raises(ImageInputError, match="no image"):
        load_image(None)
