"""The GAN training loop, for every architecture and for progressive growing.

Phases per step follow StyleGAN2-ADA: G main (non-saturating loss), G reg
(path length, lazy), D main (logistic loss), D reg (R1, lazy); lazy phases run
every N steps with their losses scaled by N and Adam's lr/betas adjusted by
N / (N + 1).  With the WGAN-GP loss (ProGAN) the gradient penalty and drift
term are part of every D step.  A progressive run follows ``GrowthSchedule``:
resolution, fade-in alpha, batch size and learning rate are functions of the
images seen.  Everything that influences the next step — weights, Adam moments,
RNG states, the data position, running means — lives in the snapshot, so a
resumed run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import copy
import dataclasses
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .. import checkpoints as ckpt
from ..data.loader import ImageDataset, batch_iterator
from ..errors import FacesynthError
from ..nets import build_discriminator, build_generator
from ..nets.growth import downsample_box, fade
from ..presets import get_preset
from ..util.atomic import append_json_line, check_writable_dir, write_json_atomic
from ..util.device import pick_device, to_device
from ..util.grid import save_grid
from . import performance, snapshots
from .distributed import SINGLE, DataParallel, run_then_leave, sharded_noise
from .growth import GrowthPoint, GrowthSchedule
from .guard import NonFiniteGuard, diagnosis, finite_means, nonfinite_parameters
from .augmentation import Augmentation
from .losses import (
    discriminator_loss,
    generator_loss,
    hinge_discriminator_loss,
    gradient_penalty,
    path_length_penalty,
    r1_penalty,
    wgan_critic_loss,
    wgan_generator_loss,
)
from .optim import adam

MAX_ROLLBACKS = 3  # a run that keeps failing after this many returns to a snapshot stops with a diagnosis

# Config fields that may be changed when resuming (they do not alter the networks' shapes).
RESUMABLE_OVERRIDES = {"batch", "g_lr", "d_lr", "r1_gamma", "r1_interval", "pl_weight", "pl_interval", "snapshot_kimg",
                       "ema_kimg", "ema_rampup", "xflip", "style_mixing_prob", "gp_lambda", "drift_weight",
                       "diffaugment", "ada_target", "ada_kimg",
                       "framing", "d_warmup_kimg"}


@dataclass
class TrainOptions:
    data: str
    out: str
    preset: str | None = None  # default: the config of init_from's model, else DEFAULT_PRESET
    kimg: float = 100.0
    seed: int = 0
    resume: str | None = None
    overrides: dict = field(default_factory=dict)
    tick_kimg: float | None = None
    device: str = "auto"
    workers: int | None = None
    keep_snapshots: int = 3
    history: bool = True  # keep every snapshot's G_ema in history/ for metrics over the run
    grid_size: int = 32
    square: str = "crop"
    quiet: bool = False
    tensorboard: bool = True
    threads: int | None = None
    max_seconds: float | None = None  # stop (with a snapshot) after this much wall time in this session
    metrics: str = ""  # e.g. "fid2k,kid2k": computed on G_ema at every snapshot, logged to metrics.jsonl
    init_from: str | None = None  # a new run starts from this checkpoint's weights (grown if of lower resolution)
    # Speed (training/performance.py): "auto" picks per device.
    precision: str = "auto"  # auto, fp32 or bf16 (for the top `reduced_resolutions` resolutions of G and D)
    reduced_resolutions: int = 4
    channels_last: str = "auto"  # auto, on, off
    compile: bool = False  # torch.compile the main G and D passes
    modconv: str = "auto"  # auto (timed on a GPU), shared or grouped


DEFAULT_PRESET = "stylegan2-64-cpu"


def initial_config(opts: TrainOptions):
    """A new run's config: the preset named, else (fine-tuning) the networks of the model it starts from."""
    if opts.preset is None and opts.init_from:
        return ckpt.read_model_file(ckpt.resolve_checkpoint(opts.init_from))[0]
    return get_preset(opts.preset or DEFAULT_PRESET)


def make_optimizer(params, lr: float, reg_interval: int | None) -> torch.optim.Adam:
    """Adam with beta1=0; lazy regularisation rescales lr and beta2 by interval / (interval + 1)."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    return adam(params, lr=lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)


def mixed_ws(G, z: torch.Tensor, prob: float, update_w_avg: bool = False, dp: DataParallel = SINGLE) -> torch.Tensor:
    """Map z to ws; with probability ``prob`` the layers from a random crossover on come from a second z.

    The crossover is drawn among the layers in use at the current growth stage (all of them when
    the network is fully grown), so mixing always has an effect.  ``update_w_avg`` moves the running
    mean of w toward this (global) batch's mean.
    """
    ws = G.mapping(z)
    if update_w_avg:
        G.mapping.track_w_avg(dp.mean(ws[:, 0].detach().mean(dim=0)))
    num_ws = getattr(G.synthesis, "active_num_ws", ws.shape[1])
    if prob > 0 and num_ws > 1:
        cutoff = int(torch.randint(1, num_ws, ()).item())
        if float(torch.rand(())) >= prob:
            cutoff = num_ws
        if cutoff < num_ws:  # rows past the active layers are unused, so mixing them changes nothing
            ws2 = G.mapping(dp.randn(z.shape, device=z.device, dtype=z.dtype))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
    return ws


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G, in place; buffers copied.  The multi-tensor (foreach) kernels are
    1.5-2x the speed of a loop over tensors on a CPU (benchmarks/results/optimizer_step.md) and launch a few
    kernels, not two per tensor, on a GPU."""
    torch._foreach_lerp_(list(G_ema.parameters()), [p.detach() for p in G.parameters()], 1.0 - beta)
    buffers = list(G_ema.buffers())
    if buffers:  # the foreach kernels refuse empty lists
        torch._foreach_copy_(buffers, list(G.buffers()))


def named_parameters_by_id(module: torch.nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in module.named_parameters()}


def _max_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Trainer:
    """Holds the networks, optimizers and counters of one run; `run()` trains to the target kimg."""

    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.dp, self.device = DataParallel.from_env(pick_device(opts.device))
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.out = check_writable_dir(opts.out)
        resume_model = snapshots.find_resume(self.out, opts.resume)
        if resume_model is not None:
            self.cfg, _ = ckpt.read_model_file(resume_model)
            bad = set(opts.overrides) - RESUMABLE_OVERRIDES
            if bad:
                raise FacesynthError(f"cannot change {sorted(bad)} when resuming: they define the networks")
            self.cfg = self.cfg.replace(**opts.overrides).validate("resumed config")
        else:
            cfg = initial_config(opts)
            if opts.init_from:
                # A trained G's average must not ramp up as if from scratch: with images_seen at 0 the ramp makes
                # G_ema follow G step by step while a fresh D disturbs it (StyleGAN2-ADA drops it on --resume too).
                cfg = cfg.replace(ema_rampup=None)
            self.cfg = cfg.replace(**opts.overrides).validate("training config")
        cfg = self.cfg
        if cfg.image_channels != 3:
            raise FacesynthError("only RGB training is supported (image_channels=3)")
        if cfg.c_dim:
            raise FacesynthError(f"training class-conditional models (c_dim={cfg.c_dim}) is not supported: data "
                                 "sets carry no labels here; draw such a model with --class")
        self.seed = opts.seed  # a resumed run keeps the seed it started with (data order depends on it)
        torch.manual_seed(self.seed)
        self.G = build_generator(cfg).to(self.device)
        self.D = build_discriminator(cfg).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = make_optimizer(self.G.parameters(), cfg.g_lr, cfg.pl_interval if cfg.pl_weight > 0 else None)
        self.opt_D = make_optimizer(self.D.parameters(), cfg.d_lr, cfg.r1_interval if cfg.r1_gamma > 0 else None)
        self.aug_gen = torch.Generator().manual_seed(opts.seed + 1)
        self.augment = Augmentation(cfg, opts.seed, self.dp.world_size)
        self.frozen_d = self.D.input_side_parameters(cfg.freeze_d) if cfg.freeze_d else []
        self.images_seen = 0
        self.step = 0
        self.pl_mean = torch.zeros((), device=self.device)
        self.elapsed = 0.0
        self.guard = NonFiniteGuard()
        self.rollbacks = 0
        self.schedule = GrowthSchedule(cfg)
        self.growth = self.schedule.at(0)
        for phase in self.schedule.phases:
            self.dp.local_batch(phase.batch, f"batch at {phase.resolution}x{phase.resolution}")
        # Memory layout before any optimizer state is loaded: fused Adam needs moments laid out as their weights.
        self.perf = performance.resolve(self.device, opts.precision, opts.channels_last, opts.compile, opts.modconv,
                                        opts.reduced_resolutions)
        performance.apply(self.perf, cfg, self.G, self.D)
        if resume_model is not None:
            self._load(resume_model)
        elif opts.init_from:
            from .warmstart import warm_start

            warm_start({"G": self.G, "D": self.D, "G_ema": self.G_ema}, opts.init_from, cfg, quiet=opts.quiet)
        for net in (self.G, self.G_ema, self.D):
            net.set_growth(self.growth.resolution, self.growth.alpha)
            self.dp.broadcast_module(net)
        sharded_noise(self.G, self.dp)
        if self.perf.modconv == "auto":
            form = performance.choose_modconv(self.G, self.dp.local_batch(self.growth.batch), cfg.z_dim, self.device)
            form = self.dp.same_choice(form, ("shared", "grouped"), self.device)  # ranks must compute alike
            self.perf = self.perf.replace(modconv=form)
            performance.apply(self.perf, cfg)
        # The main loss passes may run compiled; the regularisers' double backward runs the modules as they are.
        self.synthesis_main = performance.compiled(self.G.synthesis, self.perf.compile)
        self.D_main = performance.compiled(self.D, self.perf.compile)
        self.main = self.dp.is_main  # rank 0 alone writes files and talks
        self.quiet = opts.quiet or not self.main
        self.dataset = ImageDataset(opts.data, cfg.resolution, square=opts.square, quiet=self.quiet)
        if opts.metrics and self.main:
            self._check_metrics()
        self.dp.barrier()  # every rank has checked the run folder before rank 0 writes into it

    # ------------------------------------------------------------------ metrics
    def _check_metrics(self) -> None:
        """Unknown names or a missing feature network (Inception, dlib's) must fail now, not at the first snapshot."""
        from ..metrics import check_metric_networks

        check_metric_networks(self.opts.metrics, self.device)

    def evaluate(self, checkpoint: Path, writer=None) -> dict:
        """Metrics of the current G_ema, appended to metrics.jsonl (global RNGs are left untouched)."""
        from ..metrics import append_jsonl, compute_metrics

        res = compute_metrics(self.G_ema, self.opts.data, self.opts.metrics, device=self.device,
                              quiet=self.opts.quiet)
        append_jsonl(self.out / "metrics.jsonl", res, checkpoint=checkpoint, data=self.opts.data,
                     kimg=self.images_seen / 1000)
        flat = {k: v for entry in res.values() for k, v in entry["results"].items()}
        if writer is not None:
            for k, v in flat.items():
                writer.add_scalar(f"metrics/{k}", v, global_step=self.images_seen)
        tqdm.write("metrics " + " ".join(f"{k}={v:.4g}" for k, v in flat.items()), file=sys.stderr)
        return flat

    # ------------------------------------------------------------------ resume
    def _load(self, model_file: Path) -> None:
        snap = model_file.parent
        _, tensors = ckpt.read_model_file(model_file)
        for name, m in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            ckpt.load_module_tensors(m, tensors, name, str(model_file))
        tfile = snap / snapshots.TRAINING_FILE
        state_file = snap / "state.json"
        if not tfile.is_file() or not state_file.is_file():
            print(f"note: {snap} has no training state; starting fresh optimizers from its weights", file=sys.stderr)
            return
        training = ckpt.read_safetensors(tfile)
        snapshots.load_optimizer_tensors(self.opt_G, training, "opt_G", named_parameters_by_id(self.G))
        snapshots.load_optimizer_tensors(self.opt_D, training, "opt_D", named_parameters_by_id(self.D))
        state = ckpt.read_json(state_file, "training state")
        try:
            self.images_seen, self.step = int(state["images_seen"]), int(state["step"])
            self.elapsed = float(state.get("elapsed_s", 0.0))
            self.seed = int(state.get("seed", self.seed))
            pl_mean = float(state.get("pl_mean", 0.0))
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise FacesynthError(f"{state_file}: bad training state ({type(e).__name__}: {e})") from None
        if self.images_seen < 0 or self.step < 0:
            raise FacesynthError(f"{state_file}: bad training state (negative images_seen or step)")
        # Where the last step stood: growing past it on the next step resets Adam, as it would have.
        try:
            self.growth = GrowthPoint(**state["growth"]) if "growth" in state else self.schedule.at(self.images_seen)
        except TypeError:
            raise FacesynthError(f"{state_file}: bad growth state {state['growth']!r}") from None
        self.pl_mean = torch.tensor(pl_mean, device=self.device)
        try:
            torch.set_rng_state(training["rng.cpu"])
            self.aug_gen.set_state(training["rng.aug"])
            self.augment.load(state.get("augment", {}), training)
            if self.device.type == "cuda" and "rng.cuda" in training:
                torch.cuda.set_rng_state(training["rng.cuda"], self.device)
        except (KeyError, RuntimeError, TypeError) as e:
            raise FacesynthError(f"{tfile}: bad random-number state ({type(e).__name__})") from None
        if self.dp.is_main:
            print(f"resumed from {snap} at {self.images_seen / 1000:.1f} kimg", file=sys.stderr)

    def save(self) -> Path:
        training = {"rng.cpu": torch.get_rng_state(), "rng.aug": self.aug_gen.get_state(), **self.augment.rng_tensors()}
        if self.device.type == "cuda":
            training["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        training.update(snapshots.optimizer_tensors("opt_G", self.opt_G, named_parameters_by_id(self.G)))
        training.update(snapshots.optimizer_tensors("opt_D", self.opt_D, named_parameters_by_id(self.D)))
        state = {"images_seen": self.images_seen, "kimg": self.images_seen / 1000, "step": self.step,
                 "pl_mean": float(self.pl_mean), "elapsed_s": self.elapsed, "seed": self.seed,
                 "data": str(self.opts.data), "growth": dataclasses.asdict(self.growth),
                 "augment": self.augment.state()}
        return snapshots.save_snapshot(self.out, self.cfg, {"G": self.G, "D": self.D, "G_ema": self.G_ema},
                                  training, state, keep=self.opts.keep_snapshots)

    # ------------------------------------------------------------------ growing
    def _set_growth(self, point) -> bool:
        """Move the networks to a point of the schedule; True when that starts a new resolution."""
        grew = point.resolution != self.growth.resolution
        self.growth = point
        for net in (self.G, self.G_ema, self.D):
            net.set_growth(point.resolution, point.alpha)
        for opt, lr, interval in ((self.opt_G, point.g_lr, self.cfg.pl_interval if self.cfg.pl_weight > 0 else None),
                                  (self.opt_D, point.d_lr, self.cfg.r1_interval if self.cfg.r1_gamma > 0 else None)):
            ratio = interval / (interval + 1) if interval else 1.0
            for group in opt.param_groups:
                group["lr"] = lr * ratio
        return grew

    def _advance_growth(self) -> bool:
        """Called before each step; True when the batch stream must be rebuilt (new resolution or batch)."""
        point = self.schedule.at(self.images_seen)
        old = self.growth
        if point.resolution != old.resolution and self.images_seen > 0 and self.main:
            # The last look at the finished resolution: one grid per resolution of the schedule.
            self.save_samples(self.out / f"fakes-{self.images_seen:09d}.png")
        if self._set_growth(point):
            if self.cfg.reset_adam_on_grow:  # as ProGAN/StyleGAN: new layers start with fresh moments
                self.opt_G.state.clear()
                self.opt_D.state.clear()
            if self.main:
                tqdm.write(f"growing to {point.resolution}x{point.resolution} at {self.images_seen / 1000:.1f} kimg",
                           file=sys.stderr)
        return (point.resolution, point.batch) != (old.resolution, old.batch)

    def _batches(self):
        return batch_iterator(self.dataset, self.dp.local_batch(self.growth.batch), self.seed, start=self.images_seen,
                              workers=self.opts.workers, resolution=self.growth.resolution,
                              rank=self.dp.rank, world_size=self.dp.world_size)

    # ------------------------------------------------------------------ one step
    def by_discriminator(self, loss_fn, *logits: torch.Tensor) -> torch.Tensor:
        """``loss_fn`` summed over the discriminators whose logits ``self.D`` puts side by side (one, unless it
        declares ``logit_groups``), so each weighs the same whatever its number of logits."""
        groups = getattr(self.D, "logit_groups", None)
        if groups is None:
            return loss_fn(*logits)
        return sum(loss_fn(*(x[:, g] for x in logits)) for g in groups)

    def generator_backward(self, loss_fn, fake: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Back-propagates G's loss; returns it.  Against several discriminators side by side, each one's
        gradient on the generated images is scaled to the first's norm before they are added: a projected D's
        is two orders of magnitude larger than a pixel D's and would otherwise decide alone."""
        groups = getattr(self.D, "logit_groups", None)
        if groups is None:
            loss = loss_fn(fake_logits)
            loss.backward()
            return loss
        losses = [loss_fn(fake_logits[:, g]) for g in groups]
        grads = [torch.autograd.grad(x, fake, retain_graph=True)[0] for x in losses]
        first = grads[0].norm()
        total = grads[0] + sum(g * (first / g.norm().clamp_min(1e-12)) for g in grads[1:])
        fake.backward(total)
        return sum(losses).detach()

    def _generator_steps(self, batch: int) -> dict[str, torch.Tensor]:
        """G's main step (fool D) and, every pl_interval steps, its path-length regulariser."""
        cfg, dev, dp = self.cfg, self.device, self.dp
        G, D = self.G, self.D
        wgan, hinge = cfg.loss == "wgan-gp", cfg.loss == "hinge"
        stats = {}
        G.requires_grad_(True)
        D.requires_grad_(False)
        z = dp.randn(batch, cfg.z_dim, device=dev)
        fake = self.synthesis_main(mixed_ws(G, z, cfg.style_mixing_prob, dp=dp))
        fake_logits = self.D_main(self.augment(fake))
        # WGAN's and the hinge loss's generator both raise D's score of its images.
        self.opt_G.zero_grad(set_to_none=True)
        loss_G = self.generator_backward(wgan_generator_loss if wgan or hinge else generator_loss, fake, fake_logits)
        dp.average_gradients(G)
        self.guard.check("loss/G", loss_G, self.opt_G)
        self.opt_G.step()
        stats["loss/G"] = loss_G.detach()
        stats["scores/fake"] = fake_logits.detach().mean()

        # G reg: path length, every pl_interval steps.
        if cfg.pl_weight > 0 and self.step % cfg.pl_interval == 0:
            n = max(1, batch // cfg.pl_batch_shrink)
            ws = mixed_ws(G, dp.randn(n, cfg.z_dim, device=dev), cfg.style_mixing_prob, dp=dp)
            ws.requires_grad_(True)
            imgs = G.synthesis(ws)
            pen, self.pl_mean = path_length_penalty(imgs, ws, self.pl_mean, cfg.pl_decay, randn=dp.randn,
                                                    batch_mean=dp.mean)
            loss_pl = pen.mean() * cfg.pl_weight * cfg.pl_interval
            self.opt_G.zero_grad(set_to_none=True)
            loss_pl.backward()
            dp.average_gradients(G)
            self.guard.check("loss/pl", loss_pl, self.opt_G)
            self.opt_G.step()
            stats["loss/pl"] = pen.detach().mean()
        return stats

    def train_step(self, real_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step on this rank's share ``real_u8`` of the global batch; random draws are those of the
        whole batch, sliced (see distributed.py), and gradients are averaged over ranks before each update."""
        cfg, dev, dp = self.cfg, self.device, self.dp
        G, D = self.G, self.D
        real = to_device(real_u8, dev).to(torch.float32) / 127.5 - 1
        if self.perf.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        batch = real.shape[0]
        if cfg.xflip:
            flip = dp.rand(batch, generator=self.aug_gen) < 0.5
            flip = to_device(flip, dev)
            real = torch.where(flip[:, None, None, None], real.flip(3), real)
        if self.growth.alpha < 1.0:
            # Reals fade like the generator's output: from the up-sampled image below to full detail.
            real = fade(G.synthesis.upsample_image(downsample_box(real)), real, self.growth.alpha)
        wgan, hinge = cfg.loss == "wgan-gp", cfg.loss == "hinge"
        stats = {}

        # D warm-up (d_warmup_kimg): G waits until D has learned from the data.
        train_g = self.images_seen >= cfg.d_warmup_kimg * 1000
        if train_g:
            stats.update(self._generator_steps(batch))

        # D main: tell real from fake.
        G.requires_grad_(False)
        D.requires_grad_(True)
        for p in self.frozen_d:  # FreezeD: these keep their weights (no gradient, so Adam leaves them)
            p.requires_grad_(False)
        with torch.no_grad():
            z = dp.randn(batch, cfg.z_dim, device=dev)
            fake = self.synthesis_main(mixed_ws(G, z, cfg.style_mixing_prob, update_w_avg=True, dp=dp))
        fake_logits = self.D_main(self.augment(fake))
        real_logits = self.D_main(self.augment(real))
        self.augment.observe(real_logits)
        if wgan:
            loss_D = wgan_critic_loss(real_logits, fake_logits, cfg.drift_weight)
            gp = gradient_penalty(D, real, fake, rand=dp.rand)
            loss_D = loss_D + cfg.gp_lambda * gp.mean()
            stats["loss/gp"] = gp.detach().mean()
        else:
            loss_D = self.by_discriminator(hinge_discriminator_loss if hinge else discriminator_loss,
                                           real_logits, fake_logits)
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        dp.average_gradients(D)
        self.guard.check("loss/D", loss_D, self.opt_D)
        self.opt_D.step()
        stats["loss/D"] = loss_D.detach()
        stats["scores/real"] = real_logits.detach().mean()

        # D reg: R1, every r1_interval steps.
        if not wgan and cfg.r1_gamma > 0 and self.step % cfg.r1_interval == 0:
            real_r1 = real.detach().requires_grad_(True)
            r1_d = getattr(D, "r1_module", D)
            pen = r1_penalty(r1_d(self.augment(real_r1)), real_r1)  # through the augmentation, as ADA does
            loss_r1 = pen.mean() * (cfg.r1_gamma / 2) * cfg.r1_interval
            self.opt_D.zero_grad(set_to_none=True)
            loss_r1.backward()
            dp.average_gradients(D)
            self.guard.check("loss/r1", loss_r1, self.opt_D)
            self.opt_D.step()
            stats["loss/r1"] = pen.detach().mean()

        # EMA of G with a half-life of ema_kimg thousand images (ramped up early in training).
        global_batch = batch * dp.world_size
        self.images_seen += global_batch
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup:
            ema_nimg = min(ema_nimg, self.images_seen * cfg.ema_rampup)
        if train_g:
            update_ema(self.G_ema, G, 0.5 ** (global_batch / max(ema_nimg, 1e-8)))
        self.augment.step(global_batch)
        stats.update(self.augment.stats())
        self.step += 1
        return stats

    # ------------------------------------------------------------------ the run
    def grid_latents(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + 12345)
        return torch.randn(self.opts.grid_size, self.cfg.z_dim, generator=g)

    @torch.no_grad()
    def save_samples(self, path: Path) -> None:
        z = self.grid_latents().to(self.device)
        imgs = torch.cat([self.G_ema(zb, noise_mode="const") for zb in z.split(16)])
        # Lower growth stages are shown at the final resolution's size (nearest-neighbour upscaled).
        save_grid(imgs, path, cols=min(8, len(imgs)), tile=self.cfg.resolution)

    def run(self) -> dict:
        opts, cfg = self.opts, self.cfg
        total = int(opts.kimg * 1000)
        main = self.main
        if main:
            self._rewind_logs()
        if self.images_seen == 0 and main:
            write_json_atomic(self.out / "training_options.json",
                              {"options": dataclasses.asdict(opts), "config": cfg.to_dict(),
                               "dataset": {"path": str(opts.data), "images": len(self.dataset),
                                           "skipped": len(self.dataset.bad),
                                           "skipped_problems": dict(self.dataset.bad_problems)},
                               "schedule": self.schedule.describe(),
                               "device": str(self.device), "processes": self.dp.world_size,
                               "performance": self.perf.to_dict(),
                               "torch": torch.__version__})
            n = min(opts.grid_size, len(self.dataset))
            pick = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed))[:n]
            save_grid(torch.stack([self.dataset[int(i)] for i in pick]).float() / 127.5 - 1,
                      self.out / "reals.png", cols=min(8, n))
            self.save_samples(self.out / "fakes-init.png")
        writer = self._tensorboard() if main else None
        tick_images = int((opts.tick_kimg or max(0.2, min(4.0, cfg.snapshot_kimg / 4))) * 1000)
        snap_images = int(cfg.snapshot_kimg * 1000)
        if cfg.progressive and not self.quiet:
            tqdm.write("growth schedule:\n" + self.schedule.table(), file=sys.stderr)
        whole_tick = self._tick_starts_here(tick_images)  # before growth moves on to the next step's point
        self._advance_growth()
        batches = self._batches()
        log_path = self.out / "stats.jsonl"
        acc: dict[str, list[torch.Tensor]] = {}
        tick_start_time, tick_start_images = time.time(), self.images_seen
        next_tick = (self.images_seen // tick_images + 1) * tick_images
        next_snap = (self.images_seen // snap_images + 1) * snap_images
        last = {}
        pbar = tqdm(total=total, initial=min(self.images_seen, total), unit="img", unit_scale=True,
                    desc="train", disable=self.quiet, file=sys.stderr, dynamic_ncols=True, smoothing=0.05)
        deadline = time.time() + opts.max_seconds if opts.max_seconds else float("inf")
        data_wait = 0.0

        def restart():
            """After a rollback: the data stream, counters and progress restart at the snapshot."""
            nonlocal batches, acc, data_wait, tick_start_time, tick_start_images, next_tick, next_snap, whole_tick
            batches = self._batches()
            whole_tick = self._tick_starts_here(tick_images)
            acc, data_wait = {}, 0.0
            pbar.n = min(self.images_seen, total)
            tick_start_time, tick_start_images = time.time(), self.images_seen
            next_tick = (self.images_seen // tick_images + 1) * tick_images
            next_snap = (self.images_seen // snap_images + 1) * snap_images

        try:
            while self.images_seen < total:
                before = self.images_seen
                if self._advance_growth():
                    batches = self._batches()
                waited = time.perf_counter()
                real = next(batches)
                data_wait += time.perf_counter() - waited
                stats = self.train_step(real)
                for k, v in stats.items():
                    acc.setdefault(k, []).append(v)
                pbar.update(min(self.images_seen, total) - min(before, total))
                # Every rank must stop at the same step: the time limit is agreed on.
                done = self.images_seen >= total or (opts.max_seconds is not None
                                                     and self.dp.any(time.time() >= deadline, self.device))
                if self.images_seen >= next_tick or done:
                    now = time.time()
                    dt = now - tick_start_time
                    self.elapsed += dt
                    line = self._tick_means(acc)
                    steps_in_tick = max(len(v) for v in acc.values())
                    skipped = self.guard.take()
                    if skipped and self._handle_nonfinite(skipped, steps_in_tick, batches):
                        restart()
                        continue
                    line["skipped_steps"] = max(skipped.values(), default=0)
                    # A tick resumed mid-way, or cut short by --max-seconds or the run's end, averages fewer
                    # steps than an uninterrupted tick: the record says so, and over how many steps.
                    ended_on_tick = self.images_seen >= next_tick
                    line["tick_steps"] = steps_in_tick
                    line["partial"] = not (whole_tick and ended_on_tick)
                    line.update({
                        "kimg": self.images_seen / 1000, "step": self.step,
                        "resolution": self.growth.resolution, "alpha": self.growth.alpha,
                        "img_per_s": (self.images_seen - tick_start_images) / max(dt, 1e-9),
                        "sec_per_kimg": dt / max(self.images_seen - tick_start_images, 1) * 1000,
                        "elapsed_s": self.elapsed, "mem_mb": _max_memory_mb(self.device),
                        # Share of the tick spent waiting for data: near 0 when loading keeps up with the step.
                        "data_wait": data_wait / max(dt, 1e-9),
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    })
                    if main:
                        append_json_line(log_path, line)
                    if writer is not None:
                        for k, v in line.items():
                            if isinstance(v, float) and k not in ("kimg", "time"):
                                writer.add_scalar(k, v, global_step=self.images_seen)
                        writer.flush()
                    pbar.set_postfix({"kimg": f"{line['kimg']:.1f}", "G": f"{line.get('loss/G', float('nan')):.2f}",
                                      "D": f"{line['loss/D']:.2f}", "img/s": f"{line['img_per_s']:.1f}"})
                    last = line
                    acc, data_wait, whole_tick = {}, 0.0, ended_on_tick
                    tick_start_time, tick_start_images = time.time(), self.images_seen
                    next_tick = (self.images_seen // tick_images + 1) * tick_images
                if (self.images_seen >= next_snap or done) and nonfinite_parameters({"G": self.G, "D": self.D}):
                    # Never a snapshot of bad weights: they went bad since the last tick.
                    self._handle_nonfinite(self.guard.take() or {"weights": 1}, 1, batches)
                    restart()
                    continue
                if (self.images_seen >= next_snap or done) and main:
                    history = None
                    if opts.history:  # first, so a published snapshot always has its entry
                        history = snapshots.save_generator_history(self.out, cfg, self.G_ema, self.images_seen)
                    snap = self.save()
                    point = history or snap / ckpt.MODEL_FILE
                    if opts.metrics:
                        self.evaluate(point, writer)
                    self.save_samples(self.out / f"fakes-{self.images_seen:09d}.png")
                    tqdm.write(f"snapshot {snap.name} ({self.images_seen / 1000:.1f} kimg)", file=sys.stderr)
                if self.images_seen >= next_snap or done:
                    next_snap = (self.images_seen // snap_images + 1) * snap_images
                    tick_start_time = time.time()  # snapshot time is not training time
                if done:
                    break
        finally:
            pbar.close()
            if writer is not None:
                writer.close()
        self.dp.barrier()  # the last snapshot is complete before any rank reports the run finished
        return last

    def _tick_starts_here(self, tick_images: int) -> bool:
        """Whether an uninterrupted run starts a tick at the current point: at 0, or where the last step
        (of the growth point's global batch) crossed a multiple of ``tick_images``."""
        seen = self.images_seen
        return seen == 0 or seen // tick_images * tick_images > seen - self.growth.batch

    def _tick_means(self, acc: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        """Each statistic's mean over the tick and the ranks; steps skipped as non-finite do not count."""
        return dict(zip(acc, self.dp.mean(finite_means(acc)).tolist()))

    def _handle_nonfinite(self, skipped: dict[str, int], steps: int, batches) -> bool:
        """Report skipped steps; roll back to the last snapshot when a whole tick failed or weights went bad.

        Returns True after a rollback.  Raises with a diagnosis when rolling back keeps failing.
        """
        kimg = self.images_seen / 1000
        worst = max(skipped.values())
        if self.main:
            tqdm.write(f"skipped {worst} of {steps} steps before {kimg:.3f} kimg: non-finite "
                       + ", ".join(f"{k} ({v}x)" for k, v in skipped.items()), file=sys.stderr)
        nets = {"G": self.G, "D": self.D}
        if worst < steps and not nonfinite_parameters(nets):
            return False
        latest = snapshots.find_resume(self.out, "auto")
        if latest is None or self.rollbacks >= MAX_ROLLBACKS:
            why = diagnosis(skipped, nets, lambda: self._probe(next(batches)))
            tried = f" after {self.rollbacks} rollbacks to the last snapshot" if self.rollbacks else ""
            raise FacesynthError(f"training diverged at {kimg:.3f} kimg{tried}: {why}. Lower the learning rate "
                                 "(--lr) or raise R1 (--gamma), and resume from an earlier snapshot")
        self.rollbacks += 1
        self.dp.barrier()
        self._load(latest)
        for net in (self.G, self.G_ema, self.D):
            net.set_growth(self.growth.resolution, self.growth.alpha)
        if self.main:
            tqdm.write(f"rolled back to {latest.parent.name} ({self.rollbacks} of at most {MAX_ROLLBACKS})",
                       file=sys.stderr)
        return True

    @torch.no_grad()
    def _probe(self, real_u8: torch.Tensor) -> None:
        """One forward pass of G and D, for the diagnosis's hooks."""
        z = self.dp.randn(real_u8.shape[0], self.cfg.z_dim, device=self.device)
        self.D(self.G.synthesis(self.G.mapping(z)))
        self.D(real_u8.to(self.device).float() / 127.5 - 1)

    def _rewind_logs(self) -> None:
        """After a crash: drop temporaries and the log lines of steps past the snapshot this run starts from,
        and give every snapshot its history entry."""
        for p in snapshots.clean_stale_temporaries(self.out):
            tqdm.write(f"removed {p.name}, left by an interrupted write", file=sys.stderr)
        if self.opts.history:  # snapshots published without their entry by older versions
            for p in snapshots.restore_generator_history(self.out):
                tqdm.write(f"wrote {p.name}, missing from history/", file=sys.stderr)
        seen = self.images_seen
        for log in ("stats.jsonl", snapshots.METRICS_LOG):
            snapshots.rewind_log(self.out / log, lambda r: round(float(r.get("kimg", 0)) * 1000) <= seen)

    def _tensorboard(self):
        if not self.opts.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: JSONL still has every number
            return None
        return SummaryWriter(str(self.out / "tensorboard"))


def train(opts: TrainOptions) -> dict:
    """Train (or resume) one run; returns the last tick's statistics.

    Started by ``torchrun`` (WORLD_SIZE > 1) it trains data-parallel with the other processes.
    """
    return run_then_leave(Trainer(opts))


__all__ = ["TrainOptions", "Trainer", "train", "mixed_ws", "RESUMABLE_OVERRIDES"]
