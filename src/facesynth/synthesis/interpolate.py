"""Latent walks: a closed loop through the faces of a list of seeds.

In z the path follows great circles (slerp), since z is Gaussian and its mass lies near a
sphere; in w it is a straight line (lerp), the space the generator is most linear in.
Each leg is eased (smoothstep), so the walk slows at every seed's face and never jerks.
"""

from __future__ import annotations

import torch

from ..errors import FacesynthError
from .generate import seed_latents
from .styles import synthesize


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Great-circle interpolation of the directions of each row of a and b; the lengths go linearly."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na, b / nb
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1, 1)
    ortho = ub - cos * ua  # the part of b's direction perpendicular to a's
    ortho = ortho / ortho.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    angle = t * torch.acos(cos)
    direction = ua * torch.cos(angle) + ortho * torch.sin(angle)
    return direction / direction.norm(dim=-1, keepdim=True) * torch.lerp(na, nb, t)


def smoothstep(t: torch.Tensor) -> torch.Tensor:
    return t * t * (3 - 2 * t)


def loop_ws(G, seeds: list[int], frames: int, space: str = "w", truncation_psi: float = 1.0,
            truncation_cutoff: int | None = None) -> torch.Tensor:
    """[frames, num_ws, w_dim]: a loop through every seed and back to the first, evenly split into legs."""
    if space not in ("z", "w"):
        raise FacesynthError(f"interpolation space must be z or w, not {space!r}")
    if len(seeds) < 2:
        raise FacesynthError("interpolation needs at least two seeds")
    if frames < len(seeds):
        raise FacesynthError(f"{frames} frames cannot visit {len(seeds)} seeds; make the video longer")
    device = next(G.parameters()).device
    keys = seed_latents(seeds, G.z_dim).to(device)
    # Frame f sits at position f / frames * len(seeds) along the loop.
    pos = torch.arange(frames, device=device, dtype=torch.float32) * len(seeds) / frames
    leg = pos.floor().long()
    t = smoothstep(pos - leg).unsqueeze(-1)
    a, b = leg, (leg + 1) % len(seeds)
    with torch.no_grad():
        if space == "z":
            return G.mapping(slerp(keys[a], keys[b], t), truncation_psi, truncation_cutoff)
        ws = G.mapping(keys, truncation_psi, truncation_cutoff)
        return torch.lerp(ws[a], ws[b], t.unsqueeze(-1))


def render_frames(G, ws: torch.Tensor, noise_mode: str = "const", batch: int = 8):
    """Yields one [C, H, W] image per row of ``ws``, computed ``batch`` at a time."""
    for chunk in ws.split(batch):
        yield from synthesize(G, chunk, noise_mode, batch)
