"""Few-shot fine-tuning (Zakharov et al. 2019, section 3.3): adapt G and D to one new person.

From T images of the person (1 to 32): e = mean E(x_t, y_t).  The generator's AdaIN parameters become
a free vector psi' initialised to P e; D's per-video vector becomes w' initialised to w0 + e.  Then G
(with psi') and D train on the T images with the content, adversarial and feature-matching losses;
the embedder is no longer needed.  The result is a person checkpoint for ``animate run``.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from .. import checkpoints as ckpt
from ..errors import FacesynthError
from ..training.optim import adam
from ..util.atomic import atomic_path, write_json_atomic
from .losses import content_loss, content_network, feature_matching, hinge_d_loss
from .model import PERSON_KIND, load_run
from .reenact import Portrait, load_portraits, stack_portraits

MAX_IMAGES = 32


def finetune_person(run, portraits: list[Portrait], steps: int | None = None, lr: float | None = None,
                    batch: int = 4, seed: int = 0, device="cpu", inception=None, lpips=None,
                    quiet: bool = False) -> tuple[dict, dict]:
    """Fine-tuned G, D, psi and w for ``portraits`` from a meta-trained ``run`` (a path or load_run's result)."""
    if not 1 <= len(portraits) <= MAX_IMAGES:
        raise FacesynthError(f"fine-tuning takes 1 to {MAX_IMAGES} images of one person, got {len(portraits)}")
    cfg, nets, _ = load_run(run, device) if not isinstance(run, tuple) else run
    steps = cfg.finetune_steps if steps is None else steps
    lr = cfg.finetune_lr if lr is None else lr
    G, D = copy.deepcopy(nets["G"]).train(), copy.deepcopy(nets["D"]).train()
    frames, drawings = (t.to(device) for t in stack_portraits(portraits))
    with torch.no_grad():
        e = nets["E"](frames, drawings)
        psi = torch.nn.Parameter(G.psi(e).clone())
        w = torch.nn.Parameter((D.w0 + e[0]).clone())
    torch.manual_seed(seed)
    G.requires_grad_(True)
    G.project.requires_grad_(False)  # P is replaced by psi'
    D.W.requires_grad_(False)
    D.w0.requires_grad_(False)
    betas = tuple(cfg.betas)
    opt_G = adam([p for p in G.parameters() if p.requires_grad] + [psi], lr=lr, betas=betas)
    opt_D = adam([p for p in D.parameters() if p.requires_grad] + [w], lr=lr * cfg.d_lr / cfg.g_lr, betas=betas)
    content = content_network(cfg, device, inception, lpips)
    x_all, y_all = frames[0], drawings[0]
    log = []
    t0 = time.time()
    for step in tqdm(range(steps), desc="fine-tune", unit="step", disable=quiet, file=sys.stderr):
        pick = torch.randint(len(x_all), (min(batch, len(x_all)),))
        x, y = x_all[pick], y_all[pick]
        D.requires_grad_(False)
        fake = G(y, psi.expand(len(y), -1))
        fake_score, fake_feats = D(fake, y, w=w)
        with torch.no_grad():
            _, real_feats = D(x, y, w=w)
        loss_G = (cfg.adv_weight * -fake_score.mean() + cfg.fm_weight * feature_matching(fake_feats, real_feats)
                  + cfg.pixel_weight * F.l1_loss(fake, x))
        if content is not None:
            loss_G = loss_G + cfg.content_weight * content_loss(content, fake, x)
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        for name, p in D.named_parameters():
            p.requires_grad_(name not in ("W", "w0"))
        real_score, _ = D(x, y, w=w)
        fake_score, _ = D(fake.detach(), y, w=w)
        loss_D = hinge_d_loss(real_score, fake_score)
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        log.append({"step": step + 1, "loss/G": float(loss_G.detach()), "loss/D": float(loss_D.detach()),
                    "l1": float(F.l1_loss(fake.detach(), x))})
    G.eval(), D.eval()
    return {"cfg": cfg, "G": G, "D": D, "psi": psi.detach(), "w": w.detach()}, {
        "steps": steps, "lr": lr, "images": [p.name for p in portraits], "seconds": time.time() - t0,
        "log": log[-1:] if log else []}


def save_person(person: dict, info: dict, out: str | Path) -> Path:
    """OUT/model.safetensors (G, D, psi, w; config in the metadata) and OUT/person.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {**ckpt.module_tensors("G", person["G"]), **ckpt.module_tensors("D", person["D"]),
               "psi": person["psi"].cpu().contiguous(), "w": person["w"].cpu().contiguous()}
    with atomic_path(out / ckpt.MODEL_FILE) as tmp:
        save_file(tensors, str(tmp), metadata=ckpt.model_metadata(person["cfg"], None, PERSON_KIND))
    write_json_atomic(out / "person.json", json.loads(json.dumps(info, default=str)))
    return out / ckpt.MODEL_FILE


def finetune(run: str, images: list[str], out: str, steps: int | None = None, lr: float | None = None,
             device="cpu", seed: int = 0, inception=None, lpips=None, quiet: bool = False) -> dict:
    """The ``animate finetune`` command: align the images, fine-tune, save the person checkpoint."""
    from .warp_model import WARP_KINDS, checkpoint_kind

    if checkpoint_kind(run) in WARP_KINDS:
        from .warp_finetune import finetune_warp_person

        return finetune_warp_person(run, images, out, steps, lr, device=device, seed=seed, quiet=quiet)
    loaded = load_run(run, device)
    portraits = load_portraits(images, loaded[0].resolution, quiet=quiet)
    person, info = finetune_person(loaded, portraits, steps, lr, seed=seed, device=device, inception=inception,
                                   lpips=lpips, quiet=quiet)
    info["run"] = str(loaded[2])
    path = save_person(person, info, out)
    return {**info, "model": str(path)}


__all__ = ["finetune_person", "save_person", "finetune", "MAX_IMAGES"]
