"""Unpack .npz files made by pack_cifar.py into an ImageFolder tree: unpack_cifar.py DEST SPLIT=FILE ..."""
import sys
from pathlib import Path

import numpy as np


def main(dest, specs):
    for spec in specs:
        split, path = spec.split("=")
        d = np.load(path)
        blob, off, labels, classes, names = d["blob"], d["offsets"], d["labels"], d["classes"], d["names"]
        for c in classes:
            (Path(dest) / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i in range(len(labels)):
            (Path(dest) / split / str(classes[labels[i]]) / str(names[i])).write_bytes(blob[off[i]:off[i + 1]].tobytes())
        print(f"{dest}/{split}: {len(labels)} images")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
