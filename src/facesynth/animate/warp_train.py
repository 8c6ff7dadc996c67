"""Meta-learning the warping talking head: episodes of K source frames and a target frame of one clip.

Per step: TPS grids from the target's landmarks to each source's; x^ = G(sources, their landmark images,
the target's landmark image, grids); pixel L1 + (1 - SSIM) + content and identity (optional) + adversarial
(a patch discriminator on frame and landmark image, hinge) + feature matching, into G; then the hinge loss
into D.
The loop, snapshots, exact resume and logs are MetaTrainer's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..metrics.similarity import ssim
from ..training.optim import adam
from ..util.device import to_device
from ..util.grid import save_grid
from .identity_loss import identity_loss, identity_network
from .losses import content_loss, feature_matching, hinge_d_loss, landmark_region_weights, region_l1
from .train import MetaTrainer
from .warp_model import WARP_RUN_KIND, build_warp_networks, heldout_of, read_warp_checkpoint, source_grids

WARP_RESUMABLE = {"shots", "batch", "g_lr", "d_lr", "snapshot_steps", "content_weight", "pixel_weight",
                  "ssim_weight", "adv_weight", "fm_weight", "identity_weight", "eyes_weight", "finetune_steps",
                  "finetune_lr", "tps_falloff", "tps_smoothing"}


def warp_forward(G, ep: dict[str, torch.Tensor], cfg) -> torch.Tensor:
    """The generated targets of a batch of episodes (sampler keys, in [-1, 1], on G's device)."""
    grids = source_grids(ep["target_landmarks"], ep["landmarks"], cfg)
    return G(ep["frames"], ep["drawings"], ep["target_drawing"], grids)


def reconstruction_losses(cfg, fake: torch.Tensor, target: torch.Tensor, content=None, identity=None,
                          target_landmarks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``identity``: dlib's face ResNet (on [-1, 1] chips), with the target's landmarks to cut the chips (and to
    place the eyes for ``eyes_weight``)."""
    losses = {"pixel": F.l1_loss(fake, target), "ssim": 1 - ssim(fake, target).mean()}
    if cfg.eyes_weight and target_landmarks is not None:
        losses["eyes"] = region_l1(fake, target, landmark_region_weights(target_landmarks, fake.shape[-1]))
    if content is not None:
        losses["content"] = content_loss(content, fake, target)
    if identity is not None:
        losses["identity"] = identity_loss(identity, fake, target, target_landmarks)
    return losses


def weighted(cfg, losses: dict[str, torch.Tensor]) -> torch.Tensor:
    weights = {"adv": cfg.adv_weight, "fm": cfg.fm_weight, "pixel": cfg.pixel_weight, "ssim": cfg.ssim_weight,
               "content": cfg.content_weight, "identity": cfg.identity_weight, "eyes": cfg.eyes_weight}
    return sum(weights[k] * v for k, v in losses.items())


def adversarial_step(cfg, D, opt_D, fake: torch.Tensor, target: torch.Tensor, drawing: torch.Tensor,
                     guard=None, average=None) -> dict[str, torch.Tensor]:
    """D's hinge step on (target, fake) given the landmark image; its statistics."""
    D.requires_grad_(True)
    real_score, _ = D(target, drawing)
    fake_score, _ = D(fake.detach(), drawing)
    loss_D = hinge_d_loss(real_score.float(), fake_score.float())
    opt_D.zero_grad(set_to_none=True)
    loss_D.backward()
    if average is not None:
        average(D)
    if guard is not None:
        guard.check("loss/D", loss_D, opt_D)
    opt_D.step()
    return {"loss/D": loss_D.detach(), "scores/real": real_score.detach().mean(),
            "scores/fake": fake_score.detach().mean()}


def generator_losses(cfg, D, fake, target, drawing, content=None, identity=None,
                     target_landmarks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Reconstruction, adversarial and feature-matching terms of G (D frozen)."""
    losses = reconstruction_losses(cfg, fake, target, content, identity, target_landmarks)
    if cfg.adv_weight or cfg.fm_weight:
        D.requires_grad_(False)
        fake_score, fake_feats = D(fake, drawing)
        with torch.no_grad():
            _, real_feats = D(target, drawing)
        losses["adv"] = -fake_score.float().mean()
        losses["fm"] = feature_matching(fake_feats, real_feats)
    return {k: v.float() for k, v in losses.items()}


class WarpTrainer(MetaTrainer):
    kind = WARP_RUN_KIND
    resumable = WARP_RESUMABLE

    def read_checkpoint(self, path):
        return read_warp_checkpoint(path)

    def heldout_of(self, path) -> list[str]:
        return super().heldout_of(path) or heldout_of(path)  # a run's, or an exported model's metadata

    def build_networks(self) -> dict[str, torch.nn.Module]:
        return build_warp_networks(self.cfg)

    def build_optimizers(self) -> dict:
        self.G, self.D = self.nets["G"], self.nets["D"]
        betas = tuple(self.cfg.betas)
        self.opt_G = adam(self.G.parameters(), lr=self.cfg.g_lr, betas=betas)
        self.opt_D = adam(self.D.parameters(), lr=self.cfg.d_lr, betas=betas)
        return {"opt_G": (self.opt_G, ("G",)), "opt_D": (self.opt_D, ("D",))}

    def identity_net(self) -> torch.nn.Module | None:
        """dlib's face ResNet for the identity term, loaded on first use (None when the term is off)."""
        if not hasattr(self, "_identity"):
            self._identity = identity_network(self.cfg, self.device)
        return self._identity

    def train_step(self, ep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        ep = {k: to_device(v, self.device) for k, v in ep.items()}
        # 1, 2, ..., K sources in turn: the confidences learn to choose among several, and one source works.
        shots = 1 + self.step % cfg.shots
        ep.update({k: ep[k][:, :shots] for k in ("frames", "drawings", "landmarks")})
        with self.autocast():
            fake = warp_forward(self.compiled["G"], ep, cfg)
            losses = generator_losses(cfg, self.compiled["D"], fake, ep["target"], ep["target_drawing"],
                                      self.content, self.identity_net(), ep["target_landmarks"])
        loss_G = weighted(cfg, losses)
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.dp.average_gradients(self.G)
        self.guard.check("loss/G", loss_G, self.opt_G)
        self.opt_G.step()
        stats = {f"loss/{k}": v.detach() for k, v in losses.items()}
        stats["loss/G"] = loss_G.detach()
        if cfg.adv_weight or cfg.fm_weight:
            with self.autocast():
                stats.update(adversarial_step(cfg, self.compiled["D"], self.opt_D, fake, ep["target"],
                                              ep["target_drawing"], self.guard, self.dp.average_gradients))
        else:
            stats["loss/D"] = torch.zeros(())
        self.step += 1
        return stats

    @torch.no_grad()
    def probe(self, episodes: dict) -> None:
        ep = {k: v.to(self.device) for k, v in episodes.items()}
        self.D(warp_forward(self.G, ep, self.cfg), ep["target_drawing"])

    @torch.no_grad()
    def save_samples(self, path: Path) -> None:
        """Rows: first source frame, target landmarks, generated, target."""
        ep = {k: v.to(self.device) for k, v in self.preview.items()}
        self.G.eval()
        fake = warp_forward(self.G, ep, self.cfg)
        self.G.train()
        rows = [ep["frames"][:, 0], ep["target_drawing"], fake, ep["target"]]
        save_grid(torch.stack(rows, dim=1).flatten(0, 1).cpu(), path, cols=len(rows))


__all__ = ["WarpTrainer", "warp_forward", "reconstruction_losses", "generator_losses", "adversarial_step",
           "weighted"]
