"""Networks: each architecture's generator and discriminator, built from a GANConfig."""

from __future__ import annotations

from ..config import GANConfig
from ..errors import FacesynthError

# The most G, G_ema and D may take together by gan_size_bound's estimate (about twice their true size).  Every
# preset is under 0.7 GiB; a config that validates yet estimates past this would only die in the allocator.
MAX_NETWORK_BYTES = 8 * 2**30


def check_network_size(cfg: GANConfig) -> int:
    """Refuse, with the estimate, a config whose networks are too large to build; returns the estimate."""
    import torch

    from ..checkpoints import gan_size_bound  # the one estimate, which read_model uses too

    size = gan_size_bound(cfg)
    if size > MAX_NETWORK_BYTES and torch.get_default_device().type != "meta":  # meta allocates nothing
        raise FacesynthError(f"config {cfg.name!r}: its networks would take up to {size / 2**30:.1f} GiB (G, G_ema "
                             f"and D at resolution {cfg.resolution}, channel_base {cfg.channel_base}, channel_max "
                             f"{cfg.channel_max}), more than the {MAX_NETWORK_BYTES // 2**30} GiB facesynth builds")
    return size


def build_generator(cfg: GANConfig):
    from .generator import Generator

    check_network_size(cfg)
    return Generator(cfg)


def build_discriminator(cfg: GANConfig):
    check_network_size(cfg)
    from .discriminator import Discriminator

    if cfg.discriminator == "native":
        return Discriminator(cfg)
    from .projected import ProjectedAndNativeDiscriminator, ProjectedDiscriminator

    projected = ProjectedDiscriminator(cfg.resolution, cfg.projected_resolution)
    if cfg.discriminator == "projected":
        return projected
    return ProjectedAndNativeDiscriminator(Discriminator(cfg), projected)


def parameter_counts(cfg: GANConfig) -> dict[str, int]:
    """Trainable parameters of the networks ``cfg`` builds: G, its mapping network, and D."""
    g, d = build_generator(cfg), build_discriminator(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"G": count(g), "G.mapping": count(g.mapping), "D": count(d)}


__all__ = ["build_generator", "build_discriminator", "check_network_size", "parameter_counts", "MAX_NETWORK_BYTES"]
