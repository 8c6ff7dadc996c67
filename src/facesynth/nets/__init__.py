"""Networks: each architecture's generator and discriminator, built from a GANConfig."""

from __future__ import annotations

from ..presets import GANConfig


def build_generator(cfg: GANConfig):
    from .generator import Generator

    return Generator(cfg)


def build_discriminator(cfg: GANConfig):
    from .discriminator import Discriminator

    return Discriminator(cfg)


__all__ = ["build_generator", "build_discriminator"]
