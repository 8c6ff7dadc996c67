"""Meta-learning (Zakharov et al. 2019, section 3.2): episodes of K frames + a target from one video.

Per step, for a batch of episodes:
  E/G step: e = mean E(frames, landmark images); x^ = G(target landmarks, P e);
            content + pixel + adversarial (-D) + feature matching + |W_i - e|, into E and G.
  D step:   hinge loss on (target, x^) given the target landmarks and the video, + |W_i - e| into W.
Snapshots carry weights, Adam moments, RNG states and the sampler's state, so a resumed run
continues exactly as an uninterrupted one; progress, JSONL stats and sample grids as in ``train``.
Under torchrun each process takes every W-th episode of the batch and gradients are averaged over
processes (training/distributed.py), so W processes train as one would.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import checkpoints as ckpt
from ..errors import FacesynthError
from ..training import performance, snapshots
from ..training.distributed import DataParallel, run_then_leave
from ..training.guard import NonFiniteGuard, diagnosis, finite_means
from ..training.loop import named_parameters_by_id as _named
from ..training.optim import adam
from ..training.warmstart import load_matching
from ..util.atomic import append_json_line, check_writable_dir, write_json_atomic
from ..util.device import pick_device, to_device
from ..util.grid import save_grid
from .config import get_preset
from .episodes import EpisodeSampler, load_videos
from .losses import content_loss, content_network, feature_matching, hinge_d_loss, match_loss
from .model import RUN_KIND, build_networks, read_checkpoint

RESUMABLE = {"shots", "batch", "g_lr", "d_lr", "snapshot_steps", "content_weight", "pixel_weight", "adv_weight",
             "fm_weight", "match_weight", "finetune_steps", "finetune_lr"}


@dataclass
class MetaTrainOptions:
    data: str
    out: str
    preset: str | None = "talking-64-cpu"  # None with init_from: that model's config
    steps: int = 10_000
    shots: int | None = None  # K; the preset's when None
    seed: int = 0
    resume: str | None = None  # "auto" or a checkpoint
    init_from: str | None = None  # a new run starts from this checkpoint's weights (new layers keep their init)
    exclude: list = field(default_factory=list)  # clips kept aside for validation
    overrides: dict = field(default_factory=dict)
    device: str = "auto"
    max_seconds: float | None = None
    threads: int | None = None
    keep_snapshots: int = 3
    quiet: bool = False
    inception: str | None = None
    lpips: str | None = None
    tick_steps: int = 25
    # Speed (training/performance.py): "auto" gives bf16 autocast and channels-last on GPUs, fp32 on CPUs.
    precision: str = "auto"  # auto, fp32 or bf16
    channels_last: str = "auto"  # auto, on, off
    compile: bool = False  # torch.compile E, G and D (no double backward here, so every pass can run compiled)


class MetaTrainer:
    """The loop, snapshots and resume of meta-learning; the networks and one step are the family's
    (``build_networks``, ``train_step``, ``save_samples``, ``probe``: this class's are Zakharov et al.'s)."""

    kind = RUN_KIND
    resumable = RESUMABLE

    def __init__(self, opts: MetaTrainOptions):
        self.opts = opts
        self.dp, self.device = DataParallel.from_env(pick_device(opts.device))
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.out = check_writable_dir(opts.out)
        resume = snapshots.find_resume(self.out, opts.resume)
        state = {}
        if resume is not None:
            _, cfg, tensors, resume = self.read_checkpoint(resume)
            bad = {k for k, v in opts.overrides.items() if k not in self.resumable and getattr(cfg, k, None) != v}
            if bad:
                raise FacesynthError(f"cannot change {sorted(bad)} when resuming: they define the networks")
            state = ckpt.read_json(resume.parent / "state.json", "training state")
            exclude = list(state.get("exclude", []))
        else:
            cfg = get_preset(opts.preset) if opts.preset or not opts.init_from else self.read_checkpoint(
                opts.init_from)[1]
            if opts.shots is not None:
                cfg = cfg.replace(shots=opts.shots)
            exclude = list(opts.exclude)
            if opts.init_from and not exclude:  # what the model never saw stays unseen
                exclude = self.heldout_of(opts.init_from)
        self.cfg = cfg.replace(**opts.overrides).validate("talking-head config")
        self.local_batch = self.dp.local_batch(self.cfg.batch)
        self.main = self.dp.is_main
        self.quiet = opts.quiet or not self.main
        self.exclude = exclude
        self.seed = int(state.get("seed", opts.seed))
        torch.manual_seed(self.seed)
        self.videos = load_videos(opts.data, self.cfg.resolution, exclude=exclude, quiet=self.quiet)
        self.sampler = EpisodeSampler(self.videos, self.cfg.shots, self.seed)
        self.perf = performance.resolve(self.device, opts.precision, opts.channels_last, opts.compile, "shared")
        self.nets = {k: net.to(self.device) for k, net in self.build_networks().items()}
        for net in self.nets.values():
            self.dp.broadcast_module(net)
            if self.perf.channels_last:
                net.to(memory_format=torch.channels_last)
        self.compiled = {k: performance.compiled(net, self.perf.compile) for k, net in self.nets.items()}
        self.optimizers = self.build_optimizers()  # name -> (optimizer, the networks it updates)
        self.content = content_network(self.cfg, self.device, opts.inception, opts.lpips)
        self.step = 0
        self.elapsed = 0.0
        self.guard = NonFiniteGuard()
        if resume is not None:
            self._load(resume, tensors, state)
        elif opts.init_from:
            self._start_from(opts.init_from)
        self.preview = EpisodeSampler(self.videos, self.cfg.shots, self.seed + 999).sample(min(8, 2 * len(self.videos)))
        self.dp.barrier()  # every rank has checked the run folder before rank 0 writes into it

    # ------------------------------------------------------------------ the family's parts
    def read_checkpoint(self, path):
        return read_checkpoint(path)

    def build_networks(self) -> dict[str, torch.nn.Module]:
        return build_networks(self.cfg, len(self.videos))

    def build_optimizers(self) -> dict:
        self.E, self.G, self.D = (self.nets[k] for k in ("E", "G", "D"))
        self.E_main, self.G_main, self.D_main = (self.compiled[k] for k in ("E", "G", "D"))
        betas = tuple(self.cfg.betas)
        self.opt_EG = adam(list(self.E.parameters()) + list(self.G.parameters()), lr=self.cfg.g_lr, betas=betas)
        self.opt_D = adam(self.D.parameters(), lr=self.cfg.d_lr, betas=betas)
        return {"opt_EG": (self.opt_EG, ("E", "G")), "opt_D": (self.opt_D, ("D",))}

    def heldout_of(self, path) -> list[str]:
        """The clips a run (or its snapshot) kept aside; [] when ``path`` is no run's."""
        state = ckpt.resolve_checkpoint(path).parent / "state.json"
        return list(ckpt.read_json(state, "training state").get("exclude", [])) if state.is_file() else []

    def _param_names(self, names) -> dict:
        return {k: v for n in names for k, v in _named(self.nets[n]).items()}

    # ------------------------------------------------------------------ checkpoints
    def _load(self, model_file: Path, tensors: dict, state: dict) -> None:
        names = [v.name for v in self.videos]
        if state.get("videos") and state["videos"] != names:
            raise FacesynthError(f"{model_file}: trained on clips {state['videos']}, but {self.opts.data} gives "
                                 f"{names}: D's per-video vectors would not match")
        for name, net in self.nets.items():
            ckpt.load_module_tensors(net, tensors, name, str(model_file))
        training = ckpt.read_safetensors(model_file.parent / snapshots.TRAINING_FILE)
        for name, (opt, nets) in self.optimizers.items():
            snapshots.load_optimizer_tensors(opt, training, name, self._param_names(nets))
        torch.set_rng_state(training["rng.cpu"])
        self.sampler.generator.set_state(training["rng.sampler"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        if self.dp.is_main:
            print(f"resumed from {model_file.parent} at step {self.step}", file=sys.stderr)

    def _start_from(self, path) -> None:
        """Copy the weights of another run or model of this family into the networks; layers it lacks (and
        networks it does not hold, such as D in an exported model) keep their initial values."""
        _, _, tensors, model_file = self.read_checkpoint(path)
        new = []
        for name, net in self.nets.items():
            if any(k.startswith(name + ".") for k in tensors):
                new += [f"{name}.{k}" for k in load_matching(net, tensors, name, str(model_file))]
            else:
                new.append(f"{name} (all)")
        if self.main and not self.quiet:
            print(f"started from {model_file}; new: {', '.join(new) if new else 'none'}", file=sys.stderr)

    def save(self) -> Path:
        training = {"rng.cpu": torch.get_rng_state(), "rng.sampler": self.sampler.generator.get_state()}
        for name, (opt, nets) in self.optimizers.items():
            training.update(snapshots.optimizer_tensors(name, opt, self._param_names(nets)))
        state = {"images_seen": self.step * self.cfg.batch, "step": self.step, "elapsed_s": self.elapsed,
                 "seed": self.seed, "data": str(self.opts.data), "videos": [v.name for v in self.videos],
                 "exclude": self.exclude}
        return snapshots.save_snapshot(self.out, self.cfg, self.nets, training, state,
                                       keep=self.opts.keep_snapshots, kind=self.kind)

    # ------------------------------------------------------------------ one step
    def train_step(self, ep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        ep = {k: to_device(v, self.device) for k, v in ep.items()}
        video, target, drawing = ep["video"], ep["target"], ep["target_drawing"]
        stats = {}

        # E and G: reproduce the target from its landmarks and the K other frames' embedding.
        self.D.requires_grad_(False)
        with self.autocast():
            e = self.E_main(ep["frames"], ep["drawings"])
            fake = self.G_main(drawing, self.G.psi(e))
            fake_score, fake_feats = self.D_main(fake, drawing, video)
            with torch.no_grad():
                _, real_feats = self.D_main(target, drawing, video)
            losses = {"adv": -fake_score.float().mean(), "fm": feature_matching(fake_feats, real_feats),
                      "pixel": F.l1_loss(fake.float(), target), "match": match_loss(self.D.W[video].detach(), e)}
            if self.content is not None:
                losses["content"] = content_loss(self.content, fake, target)
        losses = {k: v.float() for k, v in losses.items()}
        weights = {"adv": cfg.adv_weight, "fm": cfg.fm_weight, "pixel": cfg.pixel_weight,
                   "match": cfg.match_weight, "content": cfg.content_weight}
        loss_G = sum(weights[k] * v for k, v in losses.items())
        self.opt_EG.zero_grad(set_to_none=True)
        loss_G.backward()
        self.dp.average_gradients(self.E)
        self.dp.average_gradients(self.G)
        self.guard.check("loss/G", loss_G, self.opt_EG)
        self.opt_EG.step()
        stats.update({f"loss/{k}": v.detach() for k, v in losses.items()})
        stats["loss/G"] = loss_G.detach()

        # D: hinge loss, and W_i pulled toward the embedding of its video.
        self.D.requires_grad_(True)
        with self.autocast():
            real_score, _ = self.D_main(target, drawing, video)
            fake_score, _ = self.D_main(fake.detach(), drawing, video)
        real_score, fake_score = real_score.float(), fake_score.float()
        loss_D = hinge_d_loss(real_score, fake_score) + cfg.match_weight * match_loss(self.D.W[video], e.detach())
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.dp.average_gradients(self.D)
        self.guard.check("loss/D", loss_D, self.opt_D)
        self.opt_D.step()
        stats.update({"loss/D": loss_D.detach(), "scores/real": real_score.detach().mean(),
                      "scores/fake": fake_score.detach().mean()})
        self.step += 1
        return stats

    def autocast(self):
        return performance.autocast(self.device, self.perf)

    def _report_nonfinite(self, steps: int, episodes: dict) -> None:
        """Steps with NaN/Inf were skipped in place; a tick in which every step failed stops the run."""
        skipped = self.guard.take()
        if not skipped:
            return
        worst = max(skipped.values())
        if self.main:
            tqdm.write(f"skipped {worst} of {steps} steps before step {self.step}: non-finite "
                       + ", ".join(f"{k} ({v}x)" for k, v in skipped.items()), file=sys.stderr)
        if worst >= steps:
            raise FacesynthError(f"training diverged at step {self.step}: "
                                 f"{diagnosis(skipped, self.nets, lambda: self.probe(episodes))}. "
                                 "Resume from the last snapshot with a lower learning rate (--lr, --d-lr)")

    @torch.no_grad()
    def probe(self, episodes: dict) -> None:
        """One forward pass of every network on ``episodes`` (for the divergence diagnosis)."""
        ep = {k: v.to(self.device) for k, v in episodes.items()}
        fake = self.G(ep["target_drawing"], self.G.psi(self.E(ep["frames"], ep["drawings"])))
        self.D(fake, ep["target_drawing"], ep["video"])

    @torch.no_grad()
    def save_samples(self, path: Path) -> None:
        """Rows: first of the K frames, target landmarks, generated, target."""
        ep = {k: v.to(self.device) for k, v in self.preview.items()}
        self.E.eval(), self.G.eval()
        fake = self.G(ep["target_drawing"], self.G.psi(self.E(ep["frames"], ep["drawings"])))
        self.E.train(), self.G.train()
        rows = [ep["frames"][:, 0], ep["target_drawing"], fake, ep["target"]]
        save_grid(torch.stack(rows, dim=1).flatten(0, 1).cpu(), path, cols=len(rows))

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        opts, cfg, main, dp = self.opts, self.cfg, self.main, self.dp
        if main:  # after a crash: no temporaries, no log lines of steps past the snapshot resumed from
            snapshots.clean_stale_temporaries(self.out)
            snapshots.rewind_log(self.out / "stats.jsonl", lambda r: int(r.get("step", 0)) <= self.step)
        if self.step == 0 and main:
            write_json_atomic(self.out / "training_options.json", {
                "options": dataclasses.asdict(opts), "config": cfg.to_dict(),
                "videos": [{"name": v.name, "frames": len(v.frames)} for v in self.videos],
                "exclude": self.exclude, "content": getattr(self.content, "name", "none"),
                "device": str(self.device), "processes": dp.world_size, "torch": torch.__version__,
                "performance": {k: v for k, v in self.perf.to_dict().items()
                                if k in ("precision", "channels_last", "compile")}})
            self.save_samples(self.out / "samples-init.png")
        log = self.out / "stats.jsonl"
        acc: dict[str, list[torch.Tensor]] = {}
        last: dict = {}
        tick_start, tick_step = time.time(), self.step
        deadline = time.time() + opts.max_seconds if opts.max_seconds else float("inf")
        pbar = tqdm(total=opts.steps, initial=min(self.step, opts.steps), unit="step", desc="meta-train",
                    disable=self.quiet, file=sys.stderr, dynamic_ncols=True)
        try:
            while self.step < opts.steps:
                episodes = self.sampler.sample(cfg.batch, dp.rank, dp.world_size)
                for k, v in self.train_step(episodes).items():
                    acc.setdefault(k, []).append(v)
                pbar.update(1)
                # Every rank must stop at the same step: the time limit is agreed on.
                done = self.step >= opts.steps or (opts.max_seconds is not None
                                                   and dp.any(time.time() >= deadline, self.device))
                if self.step % opts.tick_steps == 0 or done:
                    dt = time.time() - tick_start
                    self.elapsed += dt
                    line = dict(zip(acc, dp.mean(finite_means(acc)).tolist()))
                    self._report_nonfinite(len(acc["loss/G"]), episodes)
                    # A tick resumed mid-way or cut short averages fewer steps than a full one: say so.
                    steps = self.step - tick_step
                    line.update({"tick_steps": steps, "partial": steps < opts.tick_steps})
                    line.update({"step": self.step, "episodes": self.step * cfg.batch,
                                 "sec_per_step": dt / max(self.step - tick_step, 1), "elapsed_s": self.elapsed,
                                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
                    if main:
                        append_json_line(log, line)
                    pbar.set_postfix({"G": f"{line['loss/G']:.2f}", "D": f"{line['loss/D']:.2f}",
                                      "L1": f"{line['loss/pixel']:.3f}"})
                    last, acc = line, {}
                    tick_start, tick_step = time.time(), self.step
                if (self.step % cfg.snapshot_steps == 0 or done) and main:
                    snap = self.save()
                    self.save_samples(self.out / f"samples-{self.step:07d}.png")
                    tqdm.write(f"snapshot {snap.name} (step {self.step})", file=sys.stderr)
                    tick_start = time.time()
                if done:
                    break
        finally:
            pbar.close()
        dp.barrier()  # the last snapshot is complete before any rank reports the run finished
        return last


def meta_train(opts: MetaTrainOptions) -> dict:
    """Meta-train (or resume) a talking-head model; returns the last tick's statistics.

    Started by ``torchrun`` (WORLD_SIZE > 1) it trains data-parallel with the other processes.
    """
    return run_then_leave(trainer_class(opts)(opts))


def trainer_class(opts: MetaTrainOptions) -> type[MetaTrainer]:
    """The warping family's trainer for its presets and checkpoints, Zakharov et al.'s otherwise."""
    from .config import WARP_PRESETS
    from .warp_model import WARP_KINDS, checkpoint_kind
    from .warp_train import WarpTrainer

    if opts.resume is not None:
        out = Path(opts.out)
        resume = out if opts.resume == "auto" else opts.resume
        if opts.resume != "auto" or (out.is_dir() and snapshots.list_snapshots(out)):
            return WarpTrainer if checkpoint_kind(resume) in WARP_KINDS else MetaTrainer
    if opts.preset is None and opts.init_from:
        return WarpTrainer if checkpoint_kind(opts.init_from) in WARP_KINDS else MetaTrainer
    return WarpTrainer if opts.preset in WARP_PRESETS else MetaTrainer


__all__ = ["MetaTrainOptions", "MetaTrainer", "meta_train", "trainer_class"]
