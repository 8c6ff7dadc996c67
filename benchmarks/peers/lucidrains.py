"""lucidrains' stylegan2-pytorch, driven through its own CLI defaults; runs in .venv-stylegan2-pytorch.

The peer's `stylegan2_pytorch` command builds the Trainer's arguments from its defaults (batch 5, gradient
accumulation 6, network capacity 16, latent 512, 8 mapping layers, lr 2e-4, ...); this script captures those
arguments instead of starting its endless loop, then runs the peer's own training step, ``Trainer.train()``.
One step feeds D batch x accumulation = 30 real images (and G as many fakes).

    speed     time full steps after warm-up
    train     train for a wall-clock budget; the model is saved at the end, with a stats JSON
    generate  PNGs from the saved model (no truncation), for FID in facesynth's venv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import peer_runtime as rt
import torch

rt.import_stylegan2()
from stylegan2_pytorch import cli  # noqa: E402  (after the import shim)
from stylegan2_pytorch.stylegan2_pytorch import (  # noqa: E402
    NanException,
    Trainer,
    image_noise,
    latent_to_w,
    noise_list,
    styles_def_to_tensor,
)


def cli_model_args(data: str, res: int, out: Path) -> dict:
    """The Trainer arguments `stylegan2_pytorch --data DATA --image-size RES` would use (its defaults)."""
    captured = {}

    def capture(rank, world_size, model_args, *rest):
        captured.update(model_args, is_ddp=False, rank=0, world_size=1)

    cli.run_training = capture
    cli.train_from_folder(data=data, image_size=res, name="default", results_dir=str(out / "results"),
                          models_dir=str(out / "models"), new=True)
    return captured


def make_trainer(args) -> Trainer:
    return Trainer(**cli_model_args(args.data, args.res, Path(args.out)))


def param_counts(model: Trainer) -> dict:
    gan = model.GAN
    return {"G": rt.count(gan.G) + rt.count(gan.S), "G.mapping": rt.count(gan.S), "D": rt.count(gan.D)}


def settings(model: Trainer) -> dict:
    return {"batch": model.batch_size, "gradient_accumulate_every": model.gradient_accumulate_every,
            "images_per_step": model.batch_size * model.gradient_accumulate_every,
            "dataloader_workers": model.num_workers if model.num_workers is not None else os.cpu_count()}


def train_step(model: Trainer) -> None:
    # As its CLI does: a step that hits NaN reloads the last checkpoint and is retried.
    for attempt in range(3):
        try:
            return model.train()
        except NanException:
            if attempt == 2:
                raise


def generator_gflop(model: Trainer) -> float:
    """One image through its mapping network and generator."""
    gan = model.GAN
    G = gan.G

    def forward():
        styles = styles_def_to_tensor(latent_to_w(gan.S, noise_list(1, G.num_layers, G.latent_dim, device=0)))
        G(styles, image_noise(1, G.image_size, device=0))

    return rt.gflop(forward)


def cmd_speed(args) -> dict:
    model = make_trainer(args)
    model.clear()
    model.set_data_src(args.data)
    model.init_GAN()
    gflop = generator_gflop(model)
    if not args.steps:  # count only
        return {"G_gflop_per_image": gflop}
    # Start at step 1: step 0 only adds a checkpoint and sample grids (never timed, but slow to wait for).
    # Any 4 consecutive steps then hold one gradient-penalty step, as in training.
    model.steps = 1
    dt = rt.timed(lambda: train_step(model), args.warmup, args.steps)
    s = settings(model)
    return {"trainer": "lucidrains/stylegan2-pytorch 1.9.0", "resolution": args.res, **s,
            "params": param_counts(model), "G_gflop_per_image": gflop, "steps": args.steps,
            "warmup_steps": args.warmup, "seconds": dt,
            "img_per_s": args.steps * s["images_per_step"] / dt, "threads": torch.get_num_threads()}


def cmd_train(args) -> dict:
    model = make_trainer(args)
    model.clear()
    model.set_data_src(args.data)
    start = time.time()
    deadline = start + args.minutes * 60
    while time.time() < deadline:
        train_step(model)
        if model.steps % 50 == 0:
            model.print_log()
            sys.stdout.flush()
    seconds = time.time() - start
    model.save(model.checkpoint_num)
    s = settings(model)
    stats = {"trainer": "lucidrains/stylegan2-pytorch 1.9.0", "resolution": args.res, **s,
             "params": param_counts(model), "steps": model.steps, "train_seconds": seconds,
             "images_seen": model.steps * s["images_per_step"], "threads": torch.get_num_threads(),
             "checkpoint": model.model_name(model.checkpoint_num)}
    Path(args.out, "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


@torch.no_grad()
def cmd_generate(args) -> dict:
    import torchvision

    model = make_trainer(args)
    model.load(-1)  # its own latest checkpoint, written by `train` above
    model.GAN.eval()
    out = Path(args.images)
    out.mkdir(parents=True, exist_ok=True)
    G = model.GAN.G
    torch.manual_seed(args.seed)
    for start in range(0, args.num, args.batch):
        n = min(args.batch, args.num - start)
        # The raw generator: its EMA copy only starts averaging after 20k steps.
        latents = noise_list(n, G.num_layers, G.latent_dim, device=0)
        images = model.generate_truncated(model.GAN.S, G, latents, image_noise(n, G.image_size, device=0),
                                          trunc_psi=1.0)
        for k, img in enumerate(images):
            torchvision.utils.save_image(img, out / f"{start + k:05d}.png")
    grid = out.parent / f"{out.name}-grid.png"
    first = torch.stack([torchvision.io.decode_image(str(out / f"{k:05d}.png")) for k in range(64)]).float() / 255
    torchvision.utils.save_image(first, grid, nrow=8, padding=0)
    return {"images": str(out), "num": args.num, "grid": str(grid), "generator": "G (raw), psi 1"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("speed", "train", "generate"):
        s = sub.add_parser(name)
        s.add_argument("--data", required=True, help="folder of images")
        s.add_argument("--res", type=int, default=32)
        s.add_argument("--out", required=True, help="its results/ and models/ go here")
        if name == "speed":
            s.add_argument("--warmup", type=int, default=2)
            s.add_argument("--steps", type=int, default=8,
                           help="a multiple of 4 (its gradient penalty interval); 0: only count G's FLOPs")
        if name == "train":
            s.add_argument("--minutes", type=float, required=True)
        if name == "generate":
            s.add_argument("--images", required=True, help="output folder of PNGs")
            s.add_argument("--num", type=int, default=5000)
            s.add_argument("--batch", type=int, default=50)
            s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    threads = rt.set_threads()
    print(f"torch threads: {threads}", file=sys.stderr)
    result = {"speed": cmd_speed, "train": cmd_train, "generate": cmd_generate}[args.cmd](args)
    rt.emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
