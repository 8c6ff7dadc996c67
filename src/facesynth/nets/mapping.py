"""The mapping network z -> w shared by every generator, and the truncation trick."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FacesynthError
from .layers import EqualLinear, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """z -> w: normalised input, ``num_layers`` fully connected layers at a reduced learning rate.

    With no layers w is the normalised z itself: how ProGAN feeds its latent to the generator.  A
    class-conditional network (``c_dim`` > 0) appends the normalised embedding of a one-hot label to z;
    with ``z_dim`` = 0 it maps the label alone (the discriminator's projection).
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995, c_dim: int = 0):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.c_dim = z_dim, w_dim, num_ws, c_dim
        self.w_avg_beta = w_avg_beta
        # The label's embedding learns at the full rate; it has as many features as w.
        self.embed = EqualLinear(c_dim, w_dim) if c_dim else None
        dims = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers
        self.layers = nn.Sequential(*[
            EqualLinear(dims[i], dims[i + 1], lr_multiplier=lr_multiplier, activation="lrelu")
            for i in range(num_layers)
        ])
        if z_dim:  # running mean of w: the centre that truncation pulls toward
            self.register_buffer("w_avg", torch.zeros(w_dim))
        # The class drawn when a conditional generator is called without labels (``select_class``).
        self.default_class: int | None = None

    def select_class(self, index: int | None) -> None:
        """Draw class ``index`` whenever no labels are given (a conditional model's ``--class``)."""
        if index is not None and not (self.c_dim and 0 <= index < self.c_dim):
            raise FacesynthError(f"class {index} does not exist: this model has "
                                 f"{f'classes 0 to {self.c_dim - 1}' if self.c_dim else 'no classes'}")
        self.default_class = index

    def labels(self, c: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """One-hot labels [batch, c_dim]: those given, else the selected class."""
        if c is None:
            if self.default_class is None:
                raise FacesynthError(f"this model is class-conditional ({self.c_dim} classes): choose one "
                                     "with --class")
            c = F.one_hot(torch.full((batch,), self.default_class, device=device), self.c_dim)
        return c.to(device=device, dtype=torch.float32)

    def features(self, z: torch.Tensor | None, c: torch.Tensor | None = None) -> torch.Tensor:
        """The mapped features of z and, in a conditional network, of the labels: [batch, w_dim]."""
        x = normalize_2nd_moment(z.to(torch.float32)) if self.z_dim else None
        if self.c_dim:
            batch = z.shape[0] if z is not None else c.shape[0]
            device = z.device if z is not None else c.device
            y = normalize_2nd_moment(self.embed(self.labels(c, batch, device)))
            x = y if x is None else torch.cat([x, y], dim=1)
        return self.layers(x)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False, c: torch.Tensor | None = None) -> torch.Tensor:
        w = self.features(z, c)
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
