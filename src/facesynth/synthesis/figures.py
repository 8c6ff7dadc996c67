"""The pictures behind `facesynth mix`, `noise` and `interpolate`, written to disk."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from ..util.atomic import write_json_atomic
from ..util.grid import label_rows, make_grid, save_png, to_uint8
from ..util.video import check_video_path, upscale, write_video
from .interpolate import loop_ws, render_frames
from .noise import std_image, stochastic_variation
from .styles import describe_layers, mixing_figure, parse_style_layers, style_mix

MIN_TILE = 128  # small models' tiles are upscaled (nearest) to at least this many pixels


def _upscale_factor(size: int, minimum: int = MIN_TILE) -> int:
    return max(1, -(-minimum // size))


def mixing_grid(G, source_ws: torch.Tensor, style_ws: torch.Tensor, styles: list[str], out: str | Path,
                noise_mode: str = "const", labels: tuple[list[str], list[str]] | None = None, mark=None) -> dict:
    """Style faces (``style_ws``) along the top, source faces (``source_ws``) down the left; each cell the
    source with the ``styles`` layers' w from the style face.  Several ``styles`` stack one band each."""
    bands, row_labels, info = [], [""], []
    for spec in styles:
        layers = parse_style_layers(G, spec)
        bands.append(style_mix(G, source_ws, style_ws, layers, noise_mode))
        row_labels += [f"{spec}\n{describe_layers(G, layers)}"] + [""] * (len(source_ws) - 1)
        info.append({"styles": spec, "layers": layers})
    tiles = mixing_figure(bands)
    size = tiles.shape[-1]
    factor = _upscale_factor(size)
    grid = make_grid(tiles, cols=len(style_ws) + 1, upscale=factor)
    save_png(label_rows(grid, row_labels, size * factor), out, mark)
    result = {"out": str(out), "bands": info}
    if labels:
        result.update({"rows": labels[0], "cols": labels[1]})
    return result


def noise_figure(G, ws: torch.Tensor, out_dir: str | Path, draws: int = 16, seed: int = 0, show: int = 6,
                 mark=None) -> dict:
    """``noise.png``: per variant (noise everywhere / only coarse / middle / fine / nowhere) the first
    ``show`` draws and the per-pixel std; ``std-<variant>.png`` at full size; ``noise.json`` the numbers."""
    out_dir = Path(out_dir)
    result = stochastic_variation(G, ws, draws, seed)
    scale = float(result["all"]["std"].max())  # one scale for every variant, so they compare
    tiles, labels, stats = [], [], {}
    show = min(show, draws)
    for name, r in result.items():
        std_img = std_image(r["std"], scale)
        tiles += [*r["images"][:show], std_img]
        labels.append(f"noise: {name}")
        save_png(make_grid(std_img.unsqueeze(0), upscale=_upscale_factor(std_img.shape[-1], 256)),
                 out_dir / f"std-{name}.png", mark)
        stats[name] = {"mean_pixel_std": float(r["std"].mean()), "max_pixel_std": float(r["std"].max())}
    size = tiles[0].shape[-1]
    factor = _upscale_factor(size)
    grid = make_grid(torch.stack(tiles), cols=show + 1, upscale=factor)
    save_png(label_rows(grid, labels, size * factor), out_dir / "noise.png", mark)
    save_png(make_grid(result["all"]["images"], upscale=factor), out_dir / "draws.png", mark)
    info = {"draws": draws, "noise_seed": seed, "std_scale": scale, "variants": stats,
            "figure": str(out_dir / "noise.png")}
    write_json_atomic(out_dir / "noise.json", info)
    return info


def interpolation_video(G, seeds: list[int], out: str | Path, seconds: float = 8.0, fps: float = 30.0,
                        space: str = "w", truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                        noise_mode: str = "const", size: int = 256, quiet: bool = False, mark=None) -> dict:
    """A looping walk through ``seeds`` as .mp4 or .gif, frames upscaled (Lanczos) to about ``size`` pixels."""
    out = check_video_path(out)
    frames = max(len(seeds), round(seconds * fps))
    ws = loop_ws(G, seeds, frames, space, truncation_psi, truncation_cutoff)
    res = G.synthesis.output_resolution if hasattr(G.synthesis, "output_resolution") else None
    factor = max(1, round(size / res)) if res else 1
    images = tqdm(render_frames(G, ws, noise_mode), total=frames, desc="frames", unit="frame", disable=quiet)
    count = write_video((upscale(to_uint8(img.unsqueeze(0))[0], factor) for img in images), out, fps, mark=mark)
    return {"out": str(out), "frames": count, "fps": fps, "space": space, "seeds": seeds}

