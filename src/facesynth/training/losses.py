"""GAN losses: the non-saturating logistic loss with R1 and path-length regularisation (StyleGAN,
StyleGAN2), WGAN-GP with ProGAN's drift term, and the hinge loss of projected GANs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..util.device import to_device


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


def path_length_penalty(images: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor, decay: float,
                        randn=torch.randn, batch_mean=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty per sample, updated running mean) for the path-length regulariser (StyleGAN2, eq. 4).

    ``randn`` draws the image-space directions and ``batch_mean`` averages the lengths' mean over
    data-parallel ranks, so that every rank tracks the running mean of the whole global batch.
    """
    noise = randn(images.shape, device=images.device, dtype=images.dtype) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    mean_length = lengths.mean().detach()
    new_mean = pl_mean.lerp(batch_mean(mean_length) if batch_mean else mean_length, decay)
    return (lengths - new_mean).square(), new_mean


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


def wgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, drift_weight: float) -> torch.Tensor:
    """Wasserstein critic loss plus ProGAN's drift term epsilon * D(x)^2 (keeps scores from wandering)."""
    return fake_scores.mean() - real_scores.mean() + drift_weight * real_scores.square().mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None,
                     target: float = 1.0, rand=torch.rand) -> torch.Tensor:
    """Per-sample (||grad D(x_hat)|| - target)^2 at random points between real and fake (Gulrajani et al. 2017)."""
    # Drawn on the CPU (the same numbers on every device and rank), copied without waiting for the GPU.
    t = to_device(rand(real.shape[0], 1, 1, 1, generator=generator), real.device).to(real.dtype)
    mixed = real.detach().lerp(fake.detach(), t).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - target).square() / target**2


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017): max(0, 1 - D(x)) + max(0, 1 + D(G(z))), over every logit of every scale."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
