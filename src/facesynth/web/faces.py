"""The face generator, loaded once, and the latents each kind of request draws.

A face is named by a seed (the same z as every facesynth command) or, for a photo the server has
projected, by its latent.  Each ``*_ws`` function returns a callable that the batcher's thread runs,
so the mapping network, like the synthesis network, is only ever used from that one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..synthesis.generate import seed_latents
from ..synthesis.interpolate import slerp
from ..synthesis.styles import available_groups, layer_resolutions, mix_ws, seed_ws

Face = int | torch.Tensor  # a seed, or a projected photo's ws [1, num_ws, w_dim]


class FaceModel:
    def __init__(self, ckpt: str, device: str | torch.device = "cpu"):
        from ..checkpoints import load_generator

        self.path = ckpt
        self.G = load_generator(ckpt, device).eval().requires_grad_(False)
        self.resolution = int(max(layer_resolutions(self.G)))
        self.num_ws = len(layer_resolutions(self.G))
        self.groups = available_groups(self.G) if self.num_ws > 1 else []
        self.framing = getattr(self.G.cfg, "framing", "ffhq")  # how its training faces were cropped

    def describe(self) -> dict:
        return {"name": Path(self.path).name, "resolution": self.resolution, "num_ws": self.num_ws,
                "style_groups": self.groups, "z_dim": self.G.z_dim, "framing": self.framing}

    def ws_of(self, face: Face, psi: float) -> torch.Tensor:
        """[1, num_ws, w_dim]; truncation applies to seeds (a photo's latent is used as it was found)."""
        if isinstance(face, torch.Tensor):
            return face.to(next(self.G.parameters()).device)
        return seed_ws(self.G, [face], psi)

    def face_ws(self, seed: int, psi: float) -> Callable[[], torch.Tensor]:
        return lambda: seed_ws(self.G, [seed], psi)

    def mix_ws(self, source: Face, style: Face, layers: list[int], psi: float) -> Callable[[], torch.Tensor]:
        """The source face with ``layers`` styled by the style face."""
        return lambda: mix_ws(self.ws_of(source, psi), self.ws_of(style, psi), layers)[:, 0]

    def strip_ws(self, a: Face, b: Face, frames: int, psi: float, space: str = "w") -> Callable[[], torch.Tensor]:
        """``frames`` evenly spaced steps from a to b inclusive: slerp in z (seeds only) or lerp in w."""
        def make() -> torch.Tensor:
            t = torch.linspace(0, 1, frames).unsqueeze(-1)
            if space == "z":
                z = seed_latents([a, b], self.G.z_dim)
                return self.G.mapping(slerp(z[:1], z[1:], t).to(next(self.G.parameters()).device), psi)
            wa, wb = self.ws_of(a, psi), self.ws_of(b, psi)
            return torch.lerp(wa, wb, t.to(wa.device).unsqueeze(-1))
        return make
