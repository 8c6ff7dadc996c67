"""What every image the discriminator sees goes through during training: ADA's pipeline at its adaptive
probability and/or DiffAugment, for any architecture.  Holds their random generators and ADA's controller, so
that a snapshot records them and a resumed run continues exactly."""

from __future__ import annotations

import torch

from ..config import GANConfig
from ..errors import FacesynthError
from .ada import AdaController, AugmentPipe
from .diffaugment import diff_augment, parse_policy


class Augmentation:
    def __init__(self, cfg: GANConfig, seed: int, world_size: int = 1):
        self.policy = parse_policy(cfg.diffaugment)
        self.diff_gen = torch.Generator().manual_seed(seed + 2)
        self.ada = None
        if cfg.ada_target is not None:
            if world_size > 1:
                raise FacesynthError("ADA's adaptive probability is not yet shared between data-parallel processes: "
                                     "train with ada_target on one process, or use diffaugment")
            self.pipe = AugmentPipe.bgc(p=0.0)
            self.ada = AdaController(self.pipe, target=cfg.ada_target, ada_kimg=cfg.ada_kimg)
            self.ada_gen = torch.Generator().manual_seed(seed + 3)

    @property
    def active(self) -> bool:
        return bool(self.policy) or self.ada is not None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.ada is not None and self.ada.p > 0:
            images = self.pipe(images, self.ada_gen)
        if self.policy:
            images = diff_augment(images, self.policy, self.diff_gen)
        return images

    def observe(self, real_logits: torch.Tensor) -> None:
        """D's outputs on (augmented) reals: ADA's overfitting signal."""
        if self.ada is not None:
            self.ada.accumulate(real_logits)

    def step(self, images: int) -> None:
        if self.ada is not None:
            self.ada.update(images)

    def stats(self) -> dict[str, torch.Tensor]:
        if self.ada is None:
            return {}
        return {"augment/p": torch.tensor(self.ada.p), "augment/rt": torch.tensor(self.ada.last_rt or 0.0)}

    # ------------------------------------------------------------------ snapshots
    def rng_tensors(self) -> dict[str, torch.Tensor]:
        out = {"rng.diffaug": self.diff_gen.get_state()}
        if self.ada is not None:
            out["rng.ada"] = self.ada_gen.get_state()
        return out

    def state(self) -> dict:
        return {"ada": self.ada.state_dict()} if self.ada is not None else {}

    def load(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from a snapshot (one written before augmentation existed restores nothing)."""
        if "rng.diffaug" in tensors:
            self.diff_gen.set_state(tensors["rng.diffaug"])
        if self.ada is not None:
            if "rng.ada" in tensors:
                self.ada_gen.set_state(tensors["rng.ada"])
            if "ada" in state:
                self.ada.load_state_dict(state["ada"])
