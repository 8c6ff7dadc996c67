"""akanimax's pro-gan-pth timed at one stage; runs in .venv-pro-gan-pth.

The networks, optimizers, loss and data pipeline are those its `progan_train` script sets up with its defaults
(equalized learning rate, latent 512, WGAN-GP + drift, Adam lr 0.003 betas (0, 0.99), EMA 0.999, horizontal
flips, 4 loader workers, batch 32 at 32x32), for a model of depth log2(RES) (5: 32x32, G 20.7M).  A step is one
iteration of the inner loop of its ``ProGAN.train`` at that stage, with the fade-in over (alpha 1): one batch
of real images, used for ``batch_repeats`` (4) discriminator and generator updates.

    speed  time full steps after warm-up
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path

import peer_runtime as rt
import torch
from pro_gan_pytorch.custom_layers import EqualizedConvTranspose2d, update_average
from pro_gan_pytorch.data_tools import ImageDirectoryDataset, get_data_loader, get_transform
from pro_gan_pytorch.gan import ProGAN
from pro_gan_pytorch.losses import WganGP
from pro_gan_pytorch.networks import Discriminator, Generator
from torch.nn import ConvTranspose2d

# Its script's defaults (pro_gan_pytorch_scripts/train.py).
BATCH_SIZES = [32, 32, 32, 32, 16, 16, 8, 4, 2]
BATCH_REPEATS = 4
LR = 0.003
EMA_BETA = 0.999
WORKERS = 4


def _output_padding(self, input, output_size, stride, padding, kernel_size, num_spatial_dims=2, dilation=None):
    return ConvTranspose2d._output_padding(self, input, output_size, stride, padding, kernel_size, num_spatial_dims,
                                           dilation)


# Its first generator layer calls ConvTranspose2d._output_padding without num_spatial_dims, an argument this torch
# requires; supplying it (2) changes nothing else.
EqualizedConvTranspose2d._output_padding = _output_padding


def cycle(loader):
    while True:
        yield from loader


def cmd_speed(args) -> dict:
    depth = int(math.log2(args.res))
    device = torch.device("cpu")
    with contextlib.redirect_stdout(sys.stderr):  # it prints both networks
        gan = ProGAN(Generator(depth=depth, latent_size=512, use_eql=True),
                     Discriminator(depth=depth, latent_size=512, use_eql=True), device=device, use_ema=True,
                     ema_beta=EMA_BETA)
    batch = BATCH_SIZES[depth - 2]
    gflop = rt.gflop(lambda: gan.gen(torch.randn(1, gan.latent_size), depth, 1.0))
    dataset = ImageDirectoryDataset(Path(args.data), transform=get_transform(new_size=(args.res, args.res),
                                                                             flip_horizontal=True), rec_dir=True)
    batches = cycle(get_data_loader(dataset, batch, WORKERS))
    # As ProGAN.train creates them, but beta1 0.0 for its 0: this torch refuses an int beside a float.
    gen_optim = torch.optim.Adam(gan.gen.parameters(), lr=LR, betas=(0.0, 0.99), eps=1e-8)
    dis_optim = torch.optim.Adam(gan.dis.parameters(), lr=LR, betas=(0.0, 0.99), eps=1e-8)
    loss = WganGP()
    alpha = 1.0

    def step(repeats: int = BATCH_REPEATS):  # the body of ProGAN.train's loop over batches
        images = next(batches).to(device)
        gan_input = torch.randn(batch, gan.latent_size).to(device)
        for _ in range(repeats):
            gan.optimize_discriminator(loss, dis_optim, gan_input, images, depth, alpha)
            update_average(gan.gen_shadow, gan.gen, beta=EMA_BETA)
            gan.optimize_generator(loss, gen_optim, gan_input, images, depth, alpha)

    if not args.steps:  # count only: G's forward, and one D+G update per image
        return {"G_gflop_per_image": gflop, "train_gflop_per_update_image": rt.gflop(lambda: step(1)) / batch}

    # Warm-up (allocator, oneDNN kernel choice): single D+G updates, as many as facesynth's warm-up steps.
    for _ in range(args.warmup):
        step(repeats=1)
    dt = rt.timed(step, 0, args.steps)
    return {"trainer": "akanimax/pro-gan-pth 3.4", "resolution": args.res, "batch": batch,
            "batch_repeats": BATCH_REPEATS, "images_per_step": batch, "dataloader_workers": WORKERS,
            "params": {"G": rt.count(gan.gen), "G.mapping": 0, "D": rt.count(gan.dis)}, "G_gflop_per_image": gflop,
            "steps": args.steps,
            "warmup_updates": args.warmup, "seconds": dt, "img_per_s": args.steps * batch / dt,
            "d_img_per_s": args.steps * batch * BATCH_REPEATS / dt, "threads": torch.get_num_threads()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--data", required=True, help="folder of images")
    s.add_argument("--res", type=int, default=32)
    s.add_argument("--warmup", type=int, default=2, help="untimed single D+G updates first")
    s.add_argument("--steps", type=int, default=2, help="0: only count G's FLOPs")
    args = ap.parse_args()
    rt.set_threads()
    rt.emit(cmd_speed(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
