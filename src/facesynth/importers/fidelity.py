"""How closely an imported model reproduces the reference outputs NVIDIA's own code computed.

A reference file (``<stem>.ref.npz``, plain arrays) holds latents ``z``, labels ``c``, the mapped ``ws`` at
psi 1 and 0.7, images with constant and no noise, and discriminator logits, from the snapshot's G_ema, G and
D.  ``compare`` recomputes each with facesynth's networks and returns the largest absolute differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import FacesynthError


def _load_networks(model: Path):
    from ..nets import build_discriminator
    from ..checkpoints import load_generator, load_module_tensors, read_model

    cfg, tensors, _ = read_model(model)
    nets = {"G_ema": load_generator(model, which="G_ema")}
    if any(k.startswith("G.") for k in tensors):
        nets["G"] = load_generator(model, which="G")
    if any(k.startswith("D.") for k in tensors):
        D = build_discriminator(cfg)
        load_module_tensors(D, tensors, "D", str(model))
        nets["D"] = D.eval().requires_grad_(False)
    return cfg, nets


def _diff(a: torch.Tensor, ref: np.ndarray) -> float:
    ref_t = torch.from_numpy(np.asarray(ref, dtype=np.float32))
    if tuple(a.shape) != tuple(ref_t.shape):
        raise FacesynthError(f"shape {list(a.shape)} against the reference's {list(ref_t.shape)}")
    return float((a.float() - ref_t).abs().max()) if a.numel() else 0.0


@torch.no_grad()
def compare(model: str | Path, reference: str | Path) -> dict[str, float]:
    """Largest absolute difference per reference array (keys as in the reference file)."""
    cfg, nets = _load_networks(Path(model))
    ref = np.load(reference, allow_pickle=False)
    z = torch.from_numpy(ref["z"])
    c = torch.from_numpy(ref["c"]).float() if cfg.c_dim else None
    G = nets["G_ema"]
    out = {"w_avg": _diff(G.mapping.w_avg, ref["w_avg"])}
    ws1 = G.mapping(z, 1.0, c=c)
    ws07 = G.mapping(z, 0.7, c=c)
    out["ws_psi1"] = _diff(ws1, ref["ws_psi1"])
    out["ws_psi07"] = _diff(ws07, ref["ws_psi07"])
    images = {"img_const": G.synthesis(ws1, noise_mode="const"), "img_none": G.synthesis(ws1, noise_mode="none"),
              "img_const_psi07": G.synthesis(ws07, noise_mode="const")}
    out.update({k: _diff(v, ref[k]) for k, v in images.items()})
    if "G" in nets and "gtrain_ws_psi1" in ref:
        ws_g = nets["G"].mapping(z, 1.0, c=c)
        out["gtrain_ws_psi1"] = _diff(ws_g, ref["gtrain_ws_psi1"])
        out["gtrain_img_const"] = _diff(nets["G"].synthesis(ws_g, noise_mode="const"), ref["gtrain_img_const"])
    if "D" in nets and "d_const" in ref:
        D = nets["D"]
        # The reference images, so the logits test D alone; one image per call as the references were made.
        for key, imgs in (("d_const", ref["img_const"]), ("d_none", ref["img_none"])):
            x = torch.from_numpy(imgs)
            logits = torch.cat([D(x[i:i + 1], None if c is None else c[i:i + 1]) for i in range(len(x))])
            out[key] = _diff(logits, ref[key])
        out["d_const_batch4"] = _diff(D(torch.from_numpy(ref["img_const"]), c), ref["d_const_batch4"])
    return out


def summary(diffs: dict[str, float]) -> dict[str, float]:
    """The three numbers the import table shows: ws, images and D logits (max over their arrays)."""
    def worst(prefixes):
        vals = [v for k, v in diffs.items() if any(k.startswith(p) for p in prefixes)]
        return max(vals) if vals else float("nan")

    return {"ws": worst(("ws_", "gtrain_ws", "w_avg")), "image": worst(("img_", "gtrain_img")),
            "d_logits": worst(("d_",))}
