"""Real portraits in the latent space: align a photo, project it, save what was found; and latents
from a mixed list of seeds, saved projections and photos (for mixing real faces)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import FacesynthError
from ..provenance.manifest import ANIMATED_PHOTO
from ..util.atomic import atomic_path, write_json_atomic
from ..util.grid import make_grid, save_png, to_uint8
from ..util.hashing import file_sha256
from ..util.video import upscale, write_video
from .generate import parse_seeds
from .project import Projection, ProjectionSettings, project
from .styles import seed_ws

LATENT_FORMAT = "facesynth-latent-1"


def photo_target(G, photo: str | Path, align: bool = True, landmarks: str | None = None,
                 framing: str | None = None) -> torch.Tensor:
    """[1, 3, R, R] in [-1, 1]: the photo's face aligned as the training data was (the model config's
    ``framing``, unless another is named), or centre-cropped."""
    from ..data.align import NoFace, align_image
    from ..data.images import BadImage, decode_image, prepare_image

    res = G.synthesis.output_resolution if hasattr(G.synthesis, "output_resolution") else G.cfg.resolution
    photo = Path(photo)
    try:
        data = photo.read_bytes()
    except OSError as e:
        raise FacesynthError(f"{photo}: cannot read ({e.strerror or e})") from None
    try:
        if align:
            from ..data.align import LandmarkDetector

            img = align_image(decode_image(data, str(photo)), res, LandmarkDetector(landmarks), str(photo),
                              framing or getattr(G.cfg, "framing", "ffhq"))
            if img.note:
                print(img.note, file=sys.stderr)
            img = img.image
        else:
            img = prepare_image(data, str(photo), res)
    except (BadImage, NoFace) as e:
        raise FacesynthError(str(e)) from None
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1


def default_distance(G, lpips: str | None = None, inception: str | None = None):
    """The projection loss's perceptual distance: LPIPS-VGG16 when given, else the Inception distance fed
    twice the model's resolution (128-299 px), which keeps a CPU step well under a second at 64²."""
    from ..metrics.perceptual import InceptionDistance, lpips_path, perceptual_distance

    device = next(G.parameters()).device
    dist = perceptual_distance(lpips, device=device, inception=inception)
    if isinstance(dist, InceptionDistance):
        dist.input_size = int(min(299, max(128, 2 * G.cfg.resolution)))
        return dist.distance, f"inception-uniform-lpips@{dist.input_size}px"
    assert lpips_path(lpips) is not None
    return dist, "lpips-vgg16"


def save_latent(path: str | Path, proj: Projection) -> None:
    """ws and the noise maps as plain arrays (.npz; loadable without pickle), plus a JSON description."""
    arrays = {"ws": proj.ws.numpy().astype(np.float32)}
    arrays.update({f"noise{i}": n.numpy().astype(np.float32) for i, n in enumerate(proj.noise)})
    meta = np.array(json.dumps({"format": LATENT_FORMAT, "space": proj.settings.space}))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, meta=meta, **arrays)


def _latent_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the ``ws`` array of a latent .npz, from its .npy header alone (no data read)."""
    import zipfile

    from numpy.lib import format as npy

    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo("ws.npy")
            except KeyError:
                raise FacesynthError(f"{path}: not a facesynth latent file (no ws array)") from None
            with zf.open(info) as f:
                version = npy.read_magic(f)
                if version not in ((1, 0), (2, 0), (3, 0)):
                    raise ValueError(f"unknown .npy version {version}")
                reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                shape, _, dtype = reader(f)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, SyntaxError, TypeError) as e:
        raise FacesynthError(f"{path}: not a facesynth latent file (a .npz from `facesynth project` is a zip "
                             f"of plain arrays; {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                             ) from None
    return shape, dtype


def load_latent(path: str | Path, G) -> torch.Tensor:
    """ws [1, num_ws, w_dim] from a saved projection (.npz, read without unpickling): the array's header is
    checked first (no object arrays, the shape this model needs), then only those few floats are read."""
    path = Path(path)
    need = (1, G.num_ws, G.cfg.w_dim)
    shape, dtype = _latent_header(path)
    if dtype.hasobject:
        raise FacesynthError(f"{path}: refused: its ws array holds pickled Python objects, which facesynth never "
                             "loads (they can run code)")
    if dtype.kind != "f":
        raise FacesynthError(f"{path}: latent ws must hold floating-point numbers, not {dtype}")
    if tuple(shape) != need:
        raise FacesynthError(f"{path}: latent of shape {list(shape)} does not fit this model "
                             f"(needs {list(need)}; was it projected with another model?)")
    try:
        with np.load(path, allow_pickle=False) as data:
            ws = np.asarray(data["ws"], dtype=np.float32)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise FacesynthError(f"{path}: not a facesynth latent file ({type(e).__name__}: {e})") from None
    if ws.shape != need:
        raise FacesynthError(f"{path}: latent of shape {list(ws.shape)} does not fit this model (needs {list(need)})")
    if not np.isfinite(ws).all():
        raise FacesynthError(f"{path}: latent holds NaN or infinite values")
    return torch.from_numpy(ws)


def project_photo(G, photo: str | Path, out: str | Path, settings: ProjectionSettings | None = None,
                  align: bool = True, lpips: str | None = None, inception: str | None = None,
                  ckpt: str = "", video: bool = True, identity: bool = True, quiet: bool = False,
                  framing: str | None = None, mark=None) -> dict:
    """Align and project ``photo``; write latent.npz, target.png, reconstruction.png, compare.png,
    optimisation.mp4 and report.json (PSNR, SSIM, identity similarity, time) into ``out``.  ``mark``: what
    the generated pictures state (the photo's hash added); target.png, the photo itself, carries none."""
    from ..metrics.similarity import psnr, ssim

    out = Path(out)
    settings = (settings or ProjectionSettings()).check()
    target = photo_target(G, photo, align, framing=framing)
    distance, distance_name = default_distance(G, lpips, inception)
    proj = project(G, target, distance, settings, quiet=quiet)
    save_latent(out / "latent.npz", proj)
    factor = max(1, 256 // target.shape[-1])
    save_png(make_grid(target, upscale=factor), out / "target.png")
    beside_photo = None
    if mark:
        mark = mark.with_params(target_sha256=file_sha256(photo), steps=settings.steps, space=settings.space)
        beside_photo = replace(mark, source_type=ANIMATED_PHOTO)  # the photo and the model's face, together
    save_png(make_grid(proj.image, upscale=factor), out / "reconstruction.png", mark)
    save_png(make_grid(torch.cat([target, proj.image]), cols=2, upscale=factor), out / "compare.png", beside_photo)
    if video:
        tgt = to_uint8(target)[0]
        frames = (upscale(np.concatenate([tgt, to_uint8(f)[0]], axis=1), factor) for f in proj.frames)
        write_video(frames, out / "optimisation.mp4", fps=15, mark=beside_photo)
    report = {"photo": str(photo), "checkpoint": ckpt, "space": settings.space, "steps": settings.steps,
              "framing": (framing or getattr(G.cfg, "framing", "ffhq")) if align else "centre-crop",
              "distance": distance_name, "pixel_weight": settings.pixel_weight,
              "psnr": float(psnr(proj.image, target)[0]), "ssim": float(ssim(proj.image, target)[0]),
              "seconds": proj.seconds, "final_loss": proj.losses[-1]}
    if identity:
        from ..metrics.identity import FaceDescriber, identity_similarity

        sim = identity_similarity(FaceDescriber(), proj.image, target)[0]
        report.update({"identity_cosine": sim["cosine"], "identity_distance": sim["distance"],
                       "face_detected_in_reconstruction": sim["detected"]})
    write_json_atomic(out / "report.json", report)
    return report


def latents_from_spec(G, spec: str, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                      settings: ProjectionSettings | None = None, quiet: bool = False
                      ) -> tuple[torch.Tensor, list[str]]:
    """'1-3,photo.jpg,saved.npz' -> ws [N, num_ws, w_dim] and a label per entry: seeds map through the
    network (truncated), .npz files are saved projections, other paths are photos projected now."""
    ws, labels = [], []
    for part in [p.strip() for p in str(spec).split(",") if p.strip()]:
        if re.fullmatch(r"\d+(\s*-\s*\d+)?", part):
            seeds = parse_seeds(part)
            ws.append(seed_ws(G, seeds, truncation_psi, truncation_cutoff).cpu())
            labels += [f"seed {s}" for s in seeds]
        elif part.lower().endswith(".npz"):
            ws.append(load_latent(part, G))
            labels.append(Path(part).stem)
        else:
            if not Path(part).is_file():
                raise FacesynthError(f"{part}: neither a seed, a seed range nor an existing file")
            target = photo_target(G, part)
            distance, _ = default_distance(G)
            ws.append(project(G, target, distance, settings, quiet=quiet).ws)
            labels.append(Path(part).stem)
    if not ws:
        raise FacesynthError(f"no faces in {spec!r}")
    return torch.cat(ws), labels
