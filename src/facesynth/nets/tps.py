"""Thin-plate-spline motion from landmarks, solved in closed form (for the warping talking head).

A backward map: for every pixel of the driving frame, where to read the source.  The 68 driving landmarks
map onto the source's 68, and a ring of points on the picture's border maps onto itself, so the
background stays put and only the face (and what the spline drags with it) moves.  Coordinates are
grid_sample's (-1..1, align_corners=False); landmarks are pixel centres (pixel i at i).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BORDER_PER_SIDE = 4  # border anchors per side (corners shared): 12 in all
REGULARISATION = 1e-3  # on K's diagonal: coincident points (a closed mouth's inner lips) keep it solvable


def to_grid_units(points: torch.Tensor, resolution: int) -> torch.Tensor:
    """Pixel coordinates [..., 2] -> grid_sample's -1..1."""
    return (points + 0.5) * (2.0 / resolution) - 1


def border_points(device=None, dtype=torch.float32) -> torch.Tensor:
    """[P, 2] points on the edge of the -1..1 square."""
    t = torch.linspace(-1, 1, BORDER_PER_SIDE + 1, device=device, dtype=dtype)[:-1]
    ones = torch.ones_like(t)
    return torch.cat([torch.stack([t, -ones], 1), torch.stack([ones, t], 1),
                      torch.stack([-t, ones], 1), torch.stack([-ones, -t], 1)])


def _radial(d2: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r^2, 0 at r = 0."""
    return d2 * torch.log(d2.clamp_min(1e-12))


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B, n, m] |a_i - b_j|^2 by one matrix product (the broadcast difference is several times slower)."""
    return (a.square().sum(-1)[:, :, None] + b.square().sum(-1)[:, None] - 2 * a @ b.transpose(1, 2)).clamp_min(0)


def solve_tps(control: torch.Tensor, targets: torch.Tensor, regularisation: float = REGULARISATION) -> torch.Tensor:
    """Spline coefficients [B, N + 3, 2] with f(control_i) ~ targets_i (control, targets [B, N, 2])."""
    b, n, _ = control.shape
    c = control.double()
    kernel = _radial((c[:, :, None] - c[:, None]).square().sum(-1))
    kernel = kernel + regularisation * torch.eye(n, dtype=c.dtype, device=c.device)
    p = torch.cat([torch.ones(b, n, 1, dtype=c.dtype, device=c.device), c], 2)
    top = torch.cat([kernel, p], 2)
    bottom = torch.cat([p.transpose(1, 2), torch.zeros(b, 3, 3, dtype=c.dtype, device=c.device)], 2)
    rhs = torch.cat([targets.double(), torch.zeros(b, 3, 2, dtype=c.dtype, device=c.device)], 1)
    return torch.linalg.solve(torch.cat([top, bottom], 1), rhs).to(control.dtype)


def identity_grid(resolution: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[R, R, 2] (x, y) of every pixel centre in grid units."""
    t = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) * (2.0 / resolution) - 1
    y, x = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([x, y], -1)


def tps_grid(driving: torch.Tensor, source: torch.Tensor, resolution: int, size: int | None = None,
             regularisation: float = REGULARISATION) -> torch.Tensor:
    """grid_sample grids [B, S, S, 2] carrying the driving landmarks onto the source's (both [B, 68, 2], pixels
    of a ``resolution``-sized picture), sampled at S = ``size`` (default ``resolution``) points a side: the
    spline is smooth, so a coarser grid, resized, costs a quarter and loses little.  A larger
    ``regularisation`` trades exact interpolation of the (jittery) landmarks for a smoother field."""
    size = size or resolution
    b = driving.shape[0]
    ring = border_points(driving.device, driving.dtype).expand(b, -1, -1)
    control = torch.cat([to_grid_units(driving, resolution), ring], 1)
    targets = torch.cat([to_grid_units(source, resolution), ring], 1)
    coef = solve_tps(control, targets, regularisation)
    n = control.shape[1]
    pts = identity_grid(size, driving.device, driving.dtype).reshape(1, -1, 2).expand(b, -1, -1)
    u = _radial(squared_distances(pts, control))  # [B, R*R, N]
    affine = coef[:, n:n + 1] + pts @ coef[:, n + 1:]
    return (affine + u @ coef[:, :n]).reshape(b, size, size, 2)


def face_local(grid: torch.Tensor, driving: torch.Tensor, resolution: int, falloff: float) -> torch.Tensor:
    """``grid`` [B, S, S, 2] faded to the identity away from the face: full motion within ``falloff`` times the
    face's radius (the farthest driving landmark from their centre) of its centre, none far beyond.

    The border points alone let the spline drag the background and the body along with the head; measured on
    held-out clips, keeping the motion near the face scores better (SSIM 0.736 against 0.707 at 1.6)."""
    size = grid.shape[1]
    ident = identity_grid(size, grid.device, grid.dtype)
    pts = to_grid_units(driving, resolution)
    centre = pts.mean(1)
    radius = (pts - centre[:, None]).norm(dim=-1).amax(1).clamp_min(1e-3)
    d = (ident[None] - centre[:, None, None]).norm(dim=-1) / (falloff * radius[:, None, None])
    weight = torch.exp(-d.pow(4))[..., None]
    return ident + weight * (grid - ident)


def warp(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Images [B, C, H, W] read at ``grid`` [B, h, w, 2] (resized to the images' size when they differ)."""
    if grid.shape[1] != images.shape[-2] or grid.shape[2] != images.shape[-1]:
        grid = resize_grid(grid, images.shape[-1])
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize_grid(grid: torch.Tensor, resolution: int) -> torch.Tensor:
    return F.interpolate(grid.permute(0, 3, 1, 2), size=(resolution, resolution), mode="bilinear",
                         align_corners=False).permute(0, 2, 3, 1)


__all__ = ["to_grid_units", "border_points", "solve_tps", "identity_grid", "tps_grid", "face_local", "warp",
           "resize_grid"]
