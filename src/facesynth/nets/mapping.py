"""The mapping network z -> w shared by every generator, and the truncation trick."""

from __future__ import annotations

import torch
from torch import nn

from .layers import EqualLinear, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """z -> w: normalised input, ``num_layers`` fully connected layers at a reduced learning rate.

    With no layers w is the normalised z itself: how ProGAN feeds its latent to the generator.
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*[
            EqualLinear(dims[i], dims[i + 1], lr_multiplier=lr_multiplier, activation="lrelu")
            for i in range(num_layers)
        ])
        # Running mean of w: the centre that truncation pulls toward.
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False) -> torch.Tensor:
        w = self.layers(normalize_2nd_moment(z.to(torch.float32)))
        if update_w_avg:
            self.track_w_avg(w.detach().mean(dim=0))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1.0:
            ws = truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)
        return ws


    @torch.no_grad()
    def track_w_avg(self, batch_mean: torch.Tensor) -> None:
        """Move the running mean of w toward a batch's mean (of the whole global batch in data-parallel runs)."""
        self.w_avg.copy_(batch_mean.detach().lerp(self.w_avg, self.w_avg_beta))


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """The truncation trick: pull the first ``cutoff`` layers' w toward the mean by factor psi."""
    if cutoff is None:
        return w_avg.lerp(ws, psi)
    ws = ws.clone()
    ws[:, :cutoff] = w_avg.lerp(ws[:, :cutoff], psi)
    return ws
