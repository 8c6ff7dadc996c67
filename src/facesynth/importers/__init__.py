"""Bringing in the StyleGAN2 models people already have, without running anything from their files.

``import_checkpoint`` reads NVIDIA's stylegan2-ada-pytorch snapshot pickles, StyleGAN2's TensorFlow pickles
and rosinality's stylegan2-pytorch ``.pt`` files with a restricted unpickler (``safe_pickle``), brings each
into stylegan2-ada-pytorch's layout (``ada_pickle``, ``tf_pickle``, ``rosinality``), maps that onto
facesynth's networks (``official``) and writes a facesynth model file that every command takes with ``--ckpt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..errors import FacesynthError
from ..util.hashing import file_sha256

WHAT = ("generator", "all")
# rosinality's files carry no mean w: it is the mean of this many mapped z (seed 0), as its mean_latent does.
W_AVG_SAMPLES = 10_000


def read_foreign(src: str | Path) -> tuple[str, dict]:
    """(format name, {"G"/"D"/"G_ema": OfficialNetwork}) of a foreign checkpoint, read without running it."""
    from . import ada_pickle, rosinality, tf_pickle
    from .official import Refused
    from .safe_pickle import read_pickle

    src = Path(src)
    data = read_pickle(src)
    try:
        if ada_pickle.is_ada_snapshot(data):
            return "stylegan2-ada-pytorch", ada_pickle.networks_of(data)
        if tf_pickle.is_tf_pickle(data):
            return "stylegan2-tensorflow", tf_pickle.networks_of(data)
        if rosinality.is_rosinality(data):
            return "rosinality-stylegan2-pytorch", rosinality.networks_of(data)
    except Refused as e:
        raise FacesynthError(f"{src}: cannot import: {e}") from None
    except FacesynthError as e:
        raise FacesynthError(f"{src}: not a checkpoint facesynth can import ({e})") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise FacesynthError(f"{src}: not a checkpoint facesynth can import ({type(e).__name__}: {e})") from None
    what = f"a dict with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else f"a {type(data).__name__}"
    raise FacesynthError(f"{src}: not a StyleGAN2 checkpoint facesynth knows: it holds {what} (expected a "
                         "stylegan2-ada-pytorch snapshot, a StyleGAN2 TensorFlow pickle or a rosinality .pt)")


def _choose(networks: dict, what: str, src: Path) -> dict:
    if what == "generator":
        gen = networks.get("G_ema") or networks.get("G")
        return {"G_ema": gen}
    missing = [k for k in ("G", "D") if k not in networks]
    if missing:
        raise FacesynthError(f"{src}: holds no {' or '.join(missing)}: --what all needs the training networks "
                             "(import the generator alone with --what generator)")
    return {"G": networks["G"], "D": networks["D"], "G_ema": networks.get("G_ema") or networks["G"]}


@torch.no_grad()
def _mean_w(G) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(W_AVG_SAMPLES, G.z_dim, generator=gen)
    return torch.cat([G.mapping.features(zb) for zb in z.split(1000)]).mean(dim=0)


def build_networks(cfg, tensors: dict[str, torch.Tensor], source: str) -> dict:
    """facesynth's networks loaded with the converted tensors (each name and shape checked)."""
    from ..nets import build_discriminator, build_generator
    from ..checkpoints import load_module_tensors

    nets = {}
    for prefix in sorted({k.split(".", 1)[0] for k in tensors}):
        net = build_discriminator(cfg) if prefix == "D" else build_generator(cfg)
        own = net.state_dict()
        if prefix != "D" and f"{prefix}.mapping.w_avg" not in tensors:
            tensors[f"{prefix}.mapping.w_avg"] = own["mapping.w_avg"]  # filled in below
        load_module_tensors(net, tensors, prefix, source)
        nets[prefix] = net.eval().requires_grad_(False)
    return nets


def import_checkpoint(src: str | Path, out: str | Path, what: str = "generator", quiet: bool = False) -> Path:
    """Write a facesynth model file from NVIDIA's or rosinality's StyleGAN2 checkpoint ``src``.

    ``what="generator"``: the EMA generator alone (what inference needs); ``"all"``: G, D and G_ema, so that
    ``train --init-from`` can fine-tune it.  Nothing in ``src`` is executed.
    """
    from ..checkpoints import model_metadata, module_tensors, save_file
    from ..util.atomic import atomic_path
    from .official import Refused, build_config, facesynth_tensors

    if what not in WHAT:
        raise FacesynthError(f"--what must be one of {', '.join(WHAT)}, not {what!r}")
    if not str(out).strip() or not str(src).strip():  # Path("") would mean the current folder
        raise FacesynthError("an empty path: name the checkpoint to import and the model file to write")
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise FacesynthError(f"{src}: no such file")
    if out.exists() and out.resolve() == src.resolve():
        raise FacesynthError(f"{out}: is the file being imported; choose another --out")
    if out.is_dir():
        raise FacesynthError(f"{out}: is a folder; --out names the .safetensors file to write")
    fmt, networks = read_foreign(src)
    chosen = _choose(networks, what, src)
    digest = file_sha256(src)
    description = f"imported from {src.name} ({fmt}, sha256 {digest[:16]})"
    try:
        cfg = build_config(chosen, src.stem[:200] or "imported", description)
        tensors = facesynth_tensors(chosen, cfg)
    except Refused as e:
        raise FacesynthError(f"{src}: cannot import: {e}") from None
    missing_w_avg = not any(k.endswith("mapping.w_avg") for k in tensors)
    nets = build_networks(cfg, tensors, str(src))
    if missing_w_avg:
        for name, net in nets.items():
            if name != "D":
                net.mapping.w_avg.copy_(_mean_w(net))
    written = {}
    for prefix, net in nets.items():
        written.update(module_tensors(prefix, net))
    meta = model_metadata(cfg, None)
    meta["source"] = json.dumps({"file": src.name, "format": fmt, "sha256": digest, "what": what})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(written, str(tmp), metadata=meta)
    if not quiet:
        n = sum(v.numel() for k, v in written.items() if k.startswith("G_ema."))
        note = f"; mean w from {W_AVG_SAMPLES} samples (the file has none)" if missing_w_avg else ""
        print(f"imported {src} ({fmt}): {cfg.resolution}x{cfg.resolution}, generator {n / 1e6:.1f}M parameters, "
              f"{'G, D and G_ema' if what == 'all' else 'G_ema'} -> {out}{note}", file=sys.stderr)
    return out


__all__ = ["import_checkpoint", "read_foreign", "WHAT"]
