"""Running a PyTorch model over a bounded batch of images: what export, the PyTorch-native variants and QAT compare
against."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import batch_for


def torch_logits(model: nn.Module, x: np.ndarray, batch: int | None = None) -> torch.Tensor:
    """`model` over normalised NCHW images in batches (default: by input bytes), without autograd."""
    batch = batch or batch_for(x.shape[-1])
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)])
