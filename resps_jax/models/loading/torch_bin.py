"""pytorch_model.bin checkpoints, read through torch (an optional dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resps_jax.errors import UserError


class TorchBinReader:
    """pytorch_model.bin (official EAGLE-3 heads often ship only this); needs torch."""

    def __init__(self, file: Path):
        try:
            import torch
        except ImportError:
            raise UserError(f"{file}: reading pytorch_model.bin needs torch (pip install torch)") from None
        try:
            self.tensors = torch.load(str(file), map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(f"{file}: cannot read ({err})") from None
        self.folder = file.parent

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def read(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise UserError(f"{self.folder}: checkpoint is missing tensor {name!r}")
        tensor = self.tensors[name]
        return tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
