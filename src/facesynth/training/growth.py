"""The progressive-growing schedule: which resolution, fade-in alpha, batch size and learning rate
apply after a given number of training images.

A run grown from ``start_resolution`` spends ``stable_kimg`` there, then for each higher resolution
``fade_kimg`` fading the new blocks in (alpha rises linearly from 0 to 1) and ``stable_kimg``
training at it; the last stable phase lasts until the run ends.  Everything is a function of the
number of images seen, so a resumed run lands at exactly the same point of the schedule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import GANConfig


@dataclass(frozen=True)
class Phase:
    resolution: int
    kind: str  # "stable" or "fade"
    start: int  # images seen when the phase begins
    end: int | None  # None: the open-ended last phase
    batch: int
    g_lr: float
    d_lr: float


@dataclass(frozen=True)
class GrowthPoint:
    resolution: int
    alpha: float
    phase: int  # index into the schedule
    kind: str
    batch: int
    g_lr: float
    d_lr: float


class GrowthSchedule:
    def __init__(self, cfg: GANConfig):
        self.cfg = cfg
        phases: list[Phase] = []
        if not cfg.progressive:
            g_lr, d_lr = cfg.lr_at(cfg.resolution)
            phases.append(Phase(cfg.resolution, "stable", 0, None, cfg.batch_at(cfg.resolution), g_lr, d_lr))
        else:
            fade, stable = int(cfg.fade_kimg * 1000), int(cfg.stable_kimg * 1000)
            pos = 0
            for res in [r for r in cfg.block_resolutions if r >= cfg.start_resolution]:
                g_lr, d_lr = cfg.lr_at(res)
                batch = cfg.batch_at(res)
                if res > cfg.start_resolution:
                    phases.append(Phase(res, "fade", pos, pos + fade, batch, g_lr, d_lr))
                    pos += fade
                last = res == cfg.resolution
                phases.append(Phase(res, "stable", pos, None if last else pos + stable, batch, g_lr, d_lr))
                pos += stable
        self.phases = phases

    def at(self, images_seen: int) -> GrowthPoint:
        for i, ph in enumerate(self.phases):
            if ph.end is None or images_seen < ph.end:
                alpha = 1.0
                if ph.kind == "fade":
                    alpha = min(1.0, max(0.0, (images_seen - ph.start) / (ph.end - ph.start)))
                return GrowthPoint(ph.resolution, alpha, i, ph.kind, ph.batch, ph.g_lr, ph.d_lr)
        raise AssertionError("the last phase is open-ended")  # pragma: no cover

    @property
    def full_resolution_at(self) -> int:
        """Images seen when the final resolution is fully faded in."""
        return self.phases[-1].start

    def describe(self) -> list[dict]:
        return [asdict(p) for p in self.phases]

    def table(self) -> str:
        rows = []
        for p in self.phases:
            end = "end" if p.end is None else f"{p.end / 1000:g}"
            rows.append(f"{p.resolution:5d}²  {p.kind:6s}  kimg {p.start / 1000:g}–{end}  batch {p.batch}  "
                        f"lr G {p.g_lr:g} D {p.d_lr:g}")
        return "\n".join(rows)


__all__ = ["GrowthSchedule", "GrowthPoint", "Phase"]
