"""StyleGAN2 losses: non-saturating logistic GAN loss, R1 and path-length regularisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating loss: -log sigmoid(D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic loss: -log(1 - sigmoid(D(G(z)))) - log sigmoid(D(x))."""
    loss = F.softplus(fake_logits).mean()
    if real_logits is not None:
        loss = loss + F.softplus(-real_logits).mean()
    return loss


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Per-sample squared gradient norm of D at the real images (Mescheder et al. 2018)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3))


def path_length_penalty(images: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor,
                        decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty per sample, updated running mean) for the path-length regulariser (StyleGAN2, eq. 4)."""
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    new_mean = pl_mean.lerp(lengths.mean().detach(), decay)
    return (lengths - new_mean).square(), new_mean
