"""A generator is a mapping network (z -> one w per layer) and a synthesis network (ws -> image)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import GANConfig
from .mapping import MappingNetwork


def build_synthesis(cfg: GANConfig) -> nn.Module:
    if cfg.arch == "stylegan2":
        from .stylegan2 import SynthesisNetwork
    elif cfg.arch == "stylegan1":
        from .stylegan1 import SynthesisNetwork
    elif cfg.arch == "progan":
        from .progan import SynthesisNetwork
    else:
        raise ValueError(f"unknown arch {cfg.arch!r}")
    return SynthesisNetwork(cfg)


class Generator(nn.Module):
    """z -> image in [-1, 1] (roughly; outputs are not clamped during training)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.num_ws = cfg.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.num_ws, cfg.mapping_layers,
                                      cfg.mapping_lr_multiplier, cfg.w_avg_beta, c_dim=cfg.c_dim)
        self.synthesis = build_synthesis(cfg)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "random", c: torch.Tensor | None = None) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi, truncation_cutoff, c=c)
        return self.synthesis(ws, noise_mode=noise_mode)

    def select_class(self, index: int | None) -> None:
        """A class-conditional generator draws class ``index`` whenever it is given no labels."""
        self.mapping.select_class(index)

    def set_growth(self, resolution: int, alpha: float = 1.0) -> None:
        self.synthesis.set_growth(resolution, alpha)

    def growth_state(self) -> dict:
        return self.synthesis.growth_state()
