"""Which w styles which layers, and style mixing (Karras et al. 2019, section 3.1 and figure 3).

Layer groups are defined by the resolution a layer works at, so "coarse" means the same
on every model size: coarse 4²–8² (pose, face shape, hair style), middle 16²–32² (facial
features, eyes open or closed), fine 64² and up (colour scheme, micro-structure).
"""

from __future__ import annotations

import re

import torch

from ..errors import FacesynthError
from .generate import seed_latents

STYLE_GROUPS: dict[str, tuple[int, int | None]] = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, None)}


def layer_resolutions(G) -> list[int]:
    """The resolution each of the generator's w vectors styles, for the layers it runs at its current size."""
    syn = G.synthesis
    res = syn.layer_resolutions()
    top = getattr(syn, "output_resolution", max(res))
    return [r for r in res if r <= top]


def group_layers(G, group: str) -> list[int]:
    lo, hi = STYLE_GROUPS[group]
    layers = [i for i, r in enumerate(layer_resolutions(G)) if r >= lo and (hi is None or r <= hi)]
    if not layers:
        top = max(layer_resolutions(G))
        raise FacesynthError(f"this {top}x{top} model has no {group} layers ({group} = "
                             f"{lo}²{f'–{hi}²' if hi else ' and up'})")
    return layers


def available_groups(G) -> list[str]:
    """The groups this model has layers in (a 32x32 model has no fine layers)."""
    res = layer_resolutions(G)
    return [g for g, (lo, hi) in STYLE_GROUPS.items() if any(r >= lo and (hi is None or r <= hi) for r in res)]


def parse_style_layers(G, spec: str) -> list[int]:
    """'coarse', 'middle', 'fine', 'coarse+fine', or layer indices '0-3', '4', '0-1,6' -> sorted layer indices."""
    num = len(layer_resolutions(G))
    if num < 2:
        raise FacesynthError("this generator feeds one latent to every layer (ProGAN); style mixing needs a "
                             "style-based generator (stylegan1-* or stylegan2-* presets)")
    layers: set[int] = set()
    for part in re.split(r"[+,]", str(spec)):
        part = part.strip().lower()
        if part in STYLE_GROUPS:
            layers.update(group_layers(G, part))
            continue
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise FacesynthError(f"bad styles {spec!r}: use coarse, middle, fine or layer indices like 0-3 "
                                 f"(this model has layers 0-{num - 1})")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a or b >= num:
            raise FacesynthError(f"styles {part!r} out of range: this model has layers 0-{num - 1}")
        layers.update(range(a, b + 1))
    return sorted(layers)


def describe_layers(G, layers: list[int]) -> str:
    res = layer_resolutions(G)
    lo, hi = min(res[i] for i in layers), max(res[i] for i in layers)
    where = f"{lo}-{hi} px" if lo != hi else f"{lo} px"
    span = f"{layers[0]}-{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else str(layers)
    return f"layers {span} ({where})"


@torch.no_grad()
def seed_ws(G, seeds: list[int], truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
            device: str | torch.device | None = None) -> torch.Tensor:
    """[N, num_ws, w_dim]: each seed's w, truncated, as every command computes it."""
    device = device or next(G.parameters()).device
    return G.mapping(seed_latents(seeds, G.z_dim).to(device), truncation_psi, truncation_cutoff)


def mix_ws(source_ws: torch.Tensor, style_ws: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """[R, S, num_ws, w_dim]: source r with the given layers' w taken from style s."""
    mixed = source_ws.unsqueeze(1).repeat(1, style_ws.shape[0], 1, 1)
    mixed[:, :, layers] = style_ws[:, layers].unsqueeze(0).expand(source_ws.shape[0], -1, -1, -1)
    return mixed


@torch.no_grad()
def synthesize(G, ws: torch.Tensor, noise_mode: str = "const", batch: int = 16) -> torch.Tensor:
    """Images in [-1, 1] on the CPU from ws [N, num_ws, w_dim]."""
    device = next(G.parameters()).device
    return torch.cat([G.synthesis(w.to(device), noise_mode=noise_mode).cpu() for w in ws.split(batch)])


@torch.no_grad()
def style_mix(G, source_ws: torch.Tensor, style_ws: torch.Tensor, layers: list[int], noise_mode: str = "const",
              batch: int = 16) -> dict[str, torch.Tensor]:
    """The mixing figure's pieces: ``sources`` [R, C, H, W], ``styles`` [S, C, H, W], ``mixed`` [R, S, C, H, W]."""
    mixed_ws = mix_ws(source_ws, style_ws, layers)
    r, s = mixed_ws.shape[:2]
    mixed = synthesize(G, mixed_ws.flatten(0, 1), noise_mode, batch)
    return {"sources": synthesize(G, source_ws, noise_mode, batch),
            "styles": synthesize(G, style_ws, noise_mode, batch),
            "mixed": mixed.view(r, s, *mixed.shape[1:])}


def mixing_figure(bands: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Tiles for a grid with S + 1 columns: a blank corner and the style faces on top, then per band
    and per source a row starting with the source face.  Blank tiles are white."""
    styles = bands[0]["styles"]
    tiles = [torch.ones_like(styles[0]), *styles]
    for band in bands:
        for src, row in zip(band["sources"], band["mixed"]):
            tiles += [src, *row]
    return torch.stack(tiles)
