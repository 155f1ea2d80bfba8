"""Defect 5: a zip of highly compressible entries is capped before it is read; memory stays bounded."""
import json
import subprocess
import sys
import zipfile

import pytest

from qdeploy.app.batch import BatchLimits, batch_items
from qdeploy.app.images import ImageInputError, UploadLimits


def _bomb(path, entries: int, entry_mb: int):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for i in range(entries):
            z.writestr(f"img{i:03d}.png", b"\0" * (entry_mb << 20))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """12 entries of 100 MB of zeros: 1.26 GB (5x the 256 MB batch limit) in ~1.2 MB. Built once: compressing it
    is the cost (0.28 s per 100 MB here)."""
    return _bomb(tmp_path_factory.mktemp("bomb") / "bomb.zip", 12, 100)


def test_archive_over_the_limits_is_refused_unread(bomb):
    z = bomb
    assert z.stat().st_size < 2 << 20
    items = list(batch_items([str(z)], UploadLimits()))
    assert len(items) == 1 and isinstance(items[0][1], ImageInputError)
    assert "1258 MB uncompressed" in str(items[0][1]) and "split it" in str(items[0][1])


def test_entry_count_cap(tmp_path):
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as z:
        for i in range(300):
            z.writestr(f"{i}.png", b"x")
    items = list(batch_items([str(tmp_path / "many.zip")], UploadLimits(), BatchLimits(max_items=256)))
    assert len(items) == 1 and "holds 300 files" in str(items[0][1])


def test_lying_header_cannot_inflate(tmp_path):
    """An entry whose header claims a small size is still read through a hard cap."""
    z = _bomb(tmp_path / "one.zip", 1, 30)
    items = list(batch_items([str(z)], UploadLimits(max_bytes=1 << 20), BatchLimits(max_total_bytes=64 << 20)))
    assert isinstance(items[0][1], ImageInputError)


def test_peak_rss_bounded_on_a_bomb(bomb):
    z = bomb
    code = ("import resource, json, sys\n"
            "from qdeploy.app.batch import batch_items\nfrom qdeploy.app.images import UploadLimits\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"n = sum(1 for _ in batch_items([{str(z)!r}], UploadLimits()))\n"
            "print(json.dumps([before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, n]))")
    before, after, n = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                 check=True).stdout)
    assert n == 1 and (after - before) < 50 * 1024  # KiB: < 50 MB growth for a 1.26 GB archive
