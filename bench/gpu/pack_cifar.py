"""Pack a CIFAR-10 ImageFolder split's JPEG bytes into one .npz (no pickle) to carry to a GPU machine.

    python bench/gpu/pack_cifar.py ../shared/datasets/cifar10 train .gpu/train.npz [--limit N]
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from qdeploy.data import balanced_indices, open_split  # noqa: E402


def main(root, split, out, limit=None, part=None):
    s = open_split(root, split)
    if limit:
        s = s.subset(balanced_indices(s.labels, int(limit), seed=7))
    if part:  # "i/k": every k-th image starting at i, to split a set across transfers
        i, k = map(int, part.split("/"))
        s = s.subset(np.arange(i, len(s), k))
    blobs = [p.read_bytes() for p in s.paths]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, blob=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets, labels=s.labels,
             classes=np.array(s.classes), names=np.array([p.name for p in s.paths]))
    print(f"{out}: {len(blobs)} images, {offsets[-1] / 1e6:.1f} MB")


if __name__ == "__main__":
    args = sys.argv[1:]
    limit = args[args.index("--limit") + 1] if "--limit" in args else None
    part = args[args.index("--part") + 1] if "--part" in args else None
    main(args[0], args[1], args[2], limit, part)
