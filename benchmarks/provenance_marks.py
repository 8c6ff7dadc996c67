"""How well facesynth's marks hold: the invisible watermark after what strips metadata (PNG, JPEG 90/75/50, 50% and
25% copies, a 10% crop, blur, a screenshot's colour conversion, H.264 at a lower bitrate), beside PyPI's
invisible-watermark (DWT-DCT, as Stable Diffusion uses it); false positives on real held-out faces; and the cost
(PSNR, seconds per image and per video frame, Content Credentials included).

    .venv/bin/python benchmarks/provenance_marks.py [--faces 1000] [--images 64]
    -> benchmarks/results/provenance_marks.json, benchmarks/results/provenance_marks.md

64² images come from the bundled UTKFace model; 256² and 1024² from randomly initialised StyleGAN2 generators at
the paper's capacity (the official fixtures are 32-64 px, and no trained model that size ships): their pictures
are smooth colour fields, not faces, so those rows measure the marking, not face content.  Real faces at 256²
(UTKFace photos scaled up) are measured too, as a face-like 256² case.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from facesynth.provenance import for_model, marked, signed, watermark
from facesynth.models import default_model

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"
UTKFACE = SHARED / "data" / "faces" / "utkface-200.zip"
PORTRAITS = SHARED / "data" / "talking" / "portraits"
ID = 0x2410


# --------------------------------------------------------------------------- what strips metadata

def _jpeg(q):
    def attack(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=q)
        return np.asarray(Image.open(buf).convert("RGB"))
    return attack


def _resize(s):
    return lambda a: np.asarray(Image.fromarray(a).resize((max(1, round(a.shape[1] * s)),
                                                             max(1, round(a.shape[0] * s))), Image.BICUBIC))


def _png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return np.asarray(Image.open(buf).convert("RGB"))


def _crop10(a):
    """A crop keeping 90% of the area: the top-left 94.9% of each side."""
    k = np.sqrt(0.9)
    return np.ascontiguousarray(a[:round(a.shape[0] * k), :round(a.shape[1] * k)])


def _screenshot(a):
    """A display profile's gamma, range and colour mixing, then 8 bits again."""
    x = (a.astype(np.float64) / 255) ** 1.1 * 0.96 + 0.02
    mix = np.array([[0.95, 0.04, 0.01], [0.02, 0.96, 0.02], [0.01, 0.05, 0.94]])
    return np.clip(np.round(x @ mix.T * 255), 0, 255).astype(np.uint8)


ATTACKS = {"none": lambda a: a, "PNG": _png, "JPEG 90": _jpeg(90), "JPEG 75": _jpeg(75), "JPEG 50": _jpeg(50),
           "resize 50%": _resize(0.5), "resize 25%": _resize(0.25), "crop 10%": _crop10,
           "blur σ=1": lambda a: np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(1))),
           "screenshot": _screenshot}


# --------------------------------------------------------------------------- pictures

def generated(resolution: int, count: int) -> np.ndarray:
    from facesynth.checkpoints import load_generator
    from facesynth.synthesis.generate import generate_images
    from facesynth.util.grid import to_uint8

    if resolution == 64:
        G = load_generator(default_model(), "cpu")
    else:
        from facesynth.nets import build_generator
        from facesynth.presets import get_preset

        torch.manual_seed(resolution)
        G = build_generator(get_preset(f"stylegan2-{resolution}-paper")).eval()
    return to_uint8(generate_images(G, list(range(count)), 1.0, batch=4))


def heldout_names(count: int) -> list[str]:
    with zipfile.ZipFile(UTKFACE) as z:
        names = [n for n in z.namelist() if n.endswith(".jpg")]
    held = [n for n in names if int(hashlib.sha256(Path(n).name.encode()).hexdigest(), 16) % 100 < 10]
    return held[:count]


def utk_faces(names: list[str], side: int | None = None) -> list[np.ndarray]:
    out = []
    with zipfile.ZipFile(UTKFACE) as z:
        for n in names:
            im = Image.open(io.BytesIO(z.read(n))).convert("RGB")
            out.append(np.asarray(im.resize((side, side), Image.LANCZOS) if side else im))
    return out


# --------------------------------------------------------------------------- the two watermarks

class Ours:
    name = "facesynth (DCT spread spectrum)"

    def embed(self, a):
        return watermark.embed(a, ID)

    def read(self, a):
        r = watermark.read(a)
        return r.found, np.mean((r.bits > 0) == (watermark.id_bits(ID) > 0))


class InvisibleWatermark:
    """PyPI invisible-watermark's dwtDct with a 32-bit payload; 'found' when at least 29 of 32 bits match
    (about 1 in 120,000 for a random 32-bit read)."""
    name = "invisible-watermark dwtDct"
    PAYLOAD = np.unpackbits(np.frombuffer(b"FSyn", np.uint8))

    def __init__(self):
        from imwatermark import WatermarkDecoder, WatermarkEncoder

        self.encoder = WatermarkEncoder()
        self.encoder.set_watermark("bits", list(self.PAYLOAD))
        self.decoder = WatermarkDecoder("bits", 32)

    def embed(self, a):
        bgr = np.ascontiguousarray(a[..., ::-1])
        try:
            return np.ascontiguousarray(self.encoder.encode(bgr, "dwtDct")[..., ::-1])
        except Exception:  # it refuses pictures under 256x256
            return None

    def read(self, a):
        try:
            bits = np.array(self.decoder.decode(np.ascontiguousarray(a[..., ::-1]), "dwtDct"), dtype=np.uint8)
        except Exception:
            return False, 0.5
        acc = float(np.mean(bits == self.PAYLOAD))
        return acc >= 29 / 32, acc


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-12)))


def robustness(scheme, images) -> dict:
    rows, psnrs, seconds = {k: {"found": 0, "bits": 0.0} for k in ATTACKS}, [], []
    n = 0
    for img in images:
        t = time.perf_counter()
        m = scheme.embed(img)
        seconds.append(time.perf_counter() - t)
        if m is None:
            return {"error": f"cannot mark {img.shape[1]}x{img.shape[0]} pictures"}
        psnrs.append(psnr(img, m))
        n += 1
        for name, attack in ATTACKS.items():
            found, acc = scheme.read(attack(m))
            rows[name]["found"] += int(found)
            rows[name]["bits"] += acc
    return {"images": n, "psnr_mean": float(np.mean(psnrs)), "psnr_min": float(np.min(psnrs)),
            "embed_s": float(np.mean(seconds)),
            "attacks": {k: {"detection": v["found"] / n, "bit_accuracy": v["bits"] / n} for k, v in rows.items()}}


# --------------------------------------------------------------------------- video

def video_check(frames: list[np.ndarray], work: Path) -> dict:
    """Frames through facesynth's video writer (marked), then re-encoded by ffmpeg at a lower bitrate."""
    import imageio_ffmpeg

    from facesynth.provenance.detect import detect_file
    from facesynth.util.video import write_video

    mark = for_model(default_model(), seeds=[0, 1])
    write_video(frames[:2], work / "warm-up.mp4", fps=25, mark=mark)  # ffmpeg and the signer, loaded once
    t = time.perf_counter()
    for f in frames:  # the watermark alone: two whole writes differ by less than the noise of a shared CPU
        watermark.embed(f, ID)
    per_frame = (time.perf_counter() - t) / len(frames)
    write_video(frames, work / "marked.mp4", fps=25, mark=mark)
    t = time.perf_counter()
    signed_copy = work / "signed-again.mp4"
    signed_copy.write_bytes((work / "marked.mp4").read_bytes())
    from facesynth.provenance import sign_file

    sign_file(signed_copy, "video/mp4", mark, "signed-again.mp4")
    sign_s = time.perf_counter() - t
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    out = {"frames": len(frames), "size": frames[0].shape[1], "added_s_per_frame": per_frame, "sign_video_s": sign_s,
           "psnr_mean": float(np.mean([psnr(f, watermark.embed(f, ID)) for f in frames[:8]]))}
    for name, args in (("as written", None), ("H.264 at 300 kbit/s", ["-b:v", "300k"]),
                       ("H.264 at 100 kbit/s, half size", ["-b:v", "100k", "-vf", "scale=iw/2:ih/2"])):
        path = work / "marked.mp4"
        if args:
            path = work / f"re-{len(args)}.mp4"
            subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(work / "marked.mp4"), "-c:v", "libx264",
                            *args, "-map_metadata", "-1", str(path)], check=True)
        r = detect_file(path)
        out[name] = {"credentials": r["content_credentials"].get("valid", False) and
                     r["content_credentials"].get("present", False),
                     "watermark": r["watermark"]["found"], "z": r["watermark"]["z"],
                     "id": r["watermark"].get("model_id"), "kbytes": round(path.stat().st_size / 1024)}
    return out


# --------------------------------------------------------------------------- cost of the credentials

def signing_cost(images) -> float:
    mark = for_model(default_model(), seed=0)
    seconds = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        t = time.perf_counter()
        signed(buf.getvalue(), "image/png", mark, "face.png")
        seconds.append(time.perf_counter() - t)
    return float(np.median(seconds[1:] or seconds))


def false_positives(faces: int) -> dict:
    out = {}
    names = heldout_names(faces)
    sets = {"UTKFace held out, 200² as stored": utk_faces(names),
            "UTKFace held out, scaled to 64²": utk_faces(names, 64),
            "shared portraits": [np.asarray(Image.open(p).convert("RGB")) for p in sorted(PORTRAITS.glob("*.jpg"))]}
    for name, imgs in sets.items():
        readings = [watermark.read(a) for a in imgs]
        zs = [r.z for r in readings]
        top = readings[int(np.argmax(zs))]
        hits = sum(r.found for r in readings)
        out[name] = {"images": len(imgs), "false_positives": hits, "rate": hits / len(imgs),
                     "max_z": float(top.z), "max_z_read": top.hypothesis, "max_z_threshold": top.threshold,
                     "mean_z": float(np.mean(zs))}
    return out


def markdown(result: dict) -> str:
    lines = ["# Provenance marks: robustness, false positives, cost", "",
             "Watermark detection rate / bit accuracy (16-bit model id) after each change. 64²: the bundled model; "
             "256² and 1024²: randomly initialised generators (colour fields, not faces); 'UTKFace 256²': real "
             "photos scaled up.", ""]
    for scheme, by_size in result["robustness"].items():
        lines += [f"## {scheme}", ""]
        sizes = [s for s in by_size if "error" not in by_size[s]]
        lines.append("| change | " + " | ".join(sizes) + " |")
        lines.append("|---|" + "---|" * len(sizes))
        for attack in ATTACKS:
            cells = [f"{by_size[s]['attacks'][attack]['detection']:.0%} / {by_size[s]['attacks'][attack]['bit_accuracy']:.3f}"
                     for s in sizes]
            lines.append(f"| {attack} | " + " | ".join(cells) + " |")
        lines.append("| PSNR mean (min), dB | " + " | ".join(
            f"{by_size[s]['psnr_mean']:.1f} ({by_size[s]['psnr_min']:.1f})" for s in sizes) + " |")
        lines.append("| embed ms / image | " + " | ".join(f"{by_size[s]['embed_s'] * 1000:.0f}" for s in sizes) + " |")
        for s in by_size:
            if "error" in by_size[s]:
                lines.append(f"\n{s}: {by_size[s]['error']}")
        lines.append("")
    v = result.get("video")
    if v:
        lines += ["## Video (facesynth's writer, marked, then re-encoded)", "",
                  f"{v['frames']} frames at {v['size']}², PSNR of a marked frame {v['psnr_mean']:.1f} dB, "
                  f"{v['added_s_per_frame'] * 1000:.0f} ms added per frame (the watermark), "
                  f"{v['sign_video_s'] * 1000:.0f} ms to sign the file once.", "",
                  "| copy | credentials | watermark | z | model id | kB |", "|---|---|---|---|---|---|"]
        for k, r in v.items():
            if isinstance(r, dict):
                lines.append(f"| {k} | {'valid' if r['credentials'] else 'none'} | "
                             f"{'found' if r['watermark'] else 'not found'} | {r['z']:.1f} | {r['id']} | {r['kbytes']} |")
        lines.append("")
    lines += ["## False positives on real faces", "",
              "| pictures | count | false positives | highest z (read as, its threshold) |", "|---|---|---|---|"]
    for k, r in result["false_positives"].items():
        lines.append(f"| {k} | {r['images']} | {r['false_positives']} ({r['rate']:.2%}) | {r['max_z']:.2f} "
                     f"({r['max_z_read']}, {r['max_z_threshold']:g}) |")
    lines += ["", f"Content Credentials: {result['sign_s'] * 1000:.1f} ms to sign one PNG (median).",
              f"Threshold: z ≥ {watermark.THRESHOLD_Z} as the picture is, z ≥ {watermark.THRESHOLD_Z_CROPPED} under a "
              "crop hypothesis.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48, help="marked pictures per size (1024²: a quarter of these)")
    ap.add_argument("--faces", type=int, default=1000, help="held-out real faces for false positives")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--no-peer", action="store_true", help="skip invisible-watermark")
    ap.add_argument("--name", default="provenance_marks")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("FACESYNTH_CONFIG_DIR", tempfile.mkdtemp(prefix="facesynth-bench-config-"))
    pictures = {"64²": generated(64, args.images), "256²": generated(256, args.images),
                "1024²": generated(1024, max(2, args.images // 4)),
                "UTKFace 256²": utk_faces(heldout_names(args.images + 2000)[-args.images:], 256)}
    print("pictures ready", file=sys.stderr)
    schemes = [Ours()] + ([] if args.no_peer else [InvisibleWatermark()])
    result = {"robustness": {}, "threshold_z": watermark.THRESHOLD_Z}
    for scheme in schemes:
        result["robustness"][scheme.name] = {k: robustness(scheme, v) for k, v in pictures.items()}
        print(scheme.name, "done", file=sys.stderr)
    faces = generated(64, args.frames)
    frames = [np.asarray(Image.fromarray(f).resize((256, 256), Image.LANCZOS)) for f in faces]
    with tempfile.TemporaryDirectory() as work:
        result["video"] = video_check(frames, Path(work))
    result["sign_s"] = signing_cost(list(pictures["64²"][:8]) + list(pictures["256²"][:8]))
    result["false_positives"] = false_positives(args.faces)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
