"""rosinality/stylegan2-pytorch checkpoints: ``torch.save`` of a dict of state dicts.

``g_ema`` (always), ``g`` and ``d`` (training checkpoints, beside their optimizers and the ``args`` Namespace)
and ``latent_avg`` (in files converted from NVIDIA's).  Its layers compute what NVIDIA's do (it is a port of
the TF code, with the up-sampling kernels already flipped), so only names and layouts change: the mapping is
``style.1 ...``, the 4x4 block is ``conv1``/``to_rgb1``, each higher resolution ``convs.2j``/``convs.2j+1`` and
``to_rgbs.j``, noise maps are ``noises.noise_i`` buffers numbered as TF's, activations keep their bias in a
separate ``FusedLeakyReLU``, and the discriminator is ``convs`` (fromRGB, then one ResBlock a resolution),
``final_conv`` and ``final_linear``.  The file stores neither the mapping's learning-rate multiplier nor the
channel multiplier: the multiplier is rosinality's fixed 0.01, the channels are read off the weights.
"""

from __future__ import annotations

import math
import re

import torch

from ..errors import FacesynthError
from .official import DEFAULT_FIR, OfficialNetwork, Refused

KEYS = ("g_ema", "g", "d")


def is_rosinality(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("g_ema", data.get("g")), dict) and any(
        isinstance(k, str) and k.startswith("style.") for k in data.get("g_ema", data.get("g")))


def _fir_buffer(name: str, t: torch.Tensor, gain: float) -> None:
    if t.shape != DEFAULT_FIR.shape or not torch.allclose(t.float(), DEFAULT_FIR * gain, atol=1e-6):
        raise Refused(f"{name} is not the [1, 3, 3, 1] blur kernel facesynth's layers use")


def _channels(sd: dict, resolution: int) -> tuple[int, int]:
    """channel_base and channel_max for the channel counts of rosinality's table (multiplier 1 or 2)."""
    counts = {4: sd["input.input"].shape[1]}
    for j in range(int(math.log2(resolution)) - 2):
        counts[2 ** (j + 3)] = sd[f"convs.{2 * j}.conv.weight"].shape[1]
    for base in (16384, 32768):
        if all(c == min(base // r, 512) for r, c in counts.items()):
            return base, 512
    if len(set(counts.values())) == 1:  # a model edited to one width throughout
        return counts[4] * resolution, counts[4]
    raise Refused(f"its channel counts {counts} are not rosinality's table for channel multiplier 1 or 2")


def generator(sd: dict, where: str) -> OfficialNetwork:
    if "input.input" not in sd:
        raise FacesynthError(f"{where} holds no input.input: not a rosinality generator")
    n_rgb = len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
    resolution = 2 ** (n_rgb + 2)
    n_mlp = len({k.split(".")[1] for k in sd if re.fullmatch(r"style\.\d+\.weight", k)})
    w_dim = sd["style.1.weight"].shape[0] if n_mlp else sd["conv1.conv.modulation.weight"].shape[1]
    base, cmax = _channels(sd, resolution)
    kwargs = dict(z_dim=w_dim, w_dim=w_dim, c_dim=0, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=n_mlp, lr_multiplier=0.01),
                  synthesis_kwargs=dict(channel_base=base, channel_max=cmax, architecture="skip"))
    out = {}
    for name, t in sd.items():
        key = _generator_name(name, t)
        if key:
            out[key] = t
    return OfficialNetwork("Generator", kwargs, out)


def _layer_name(rest: str) -> str | None:
    return {"conv.weight": "weight", "conv.modulation.weight": "affine.weight",
            "conv.modulation.bias": "affine.bias", "noise.weight": "noise_strength", "activate.bias": "bias"}.get(rest)


def _generator_name(name: str, t: torch.Tensor) -> str | None:
    """NVIDIA's name for one rosinality generator tensor (None: a fixed blur kernel, checked and dropped)."""
    m = re.fullmatch(r"style\.(\d+)\.(weight|bias)", name)
    if m:
        return f"mapping.fc{int(m[1]) - 1}.{m[2]}"
    if name == "input.input":
        return "synthesis.b4.const"
    m = re.fullmatch(r"noises\.noise_(\d+)", name)
    if m:
        i = int(m[1])  # numbered as TF's: noise 0 at 4x4, then two per resolution
        return f"synthesis.b{2 ** ((i + 5) // 2)}.{'conv1' if i % 2 == 0 else 'conv0'}.noise_const"
    if name.endswith(".kernel"):
        _fir_buffer(name, t, 4.0)  # the up-sampling kernels carry the gain of 4
        return None
    m = re.fullmatch(r"(conv1|convs\.(\d+))\.(.+)", name)
    if m:
        if m[2] is None:
            res, layer = 4, "conv1"
        else:
            res, layer = 2 ** (int(m[2]) // 2 + 3), ("conv0", "conv1")[int(m[2]) % 2]
        what = _layer_name(m[3])
        if what:
            return f"synthesis.b{res}.{layer}.{what}"
    m = re.fullmatch(r"(to_rgb1|to_rgbs\.(\d+))\.(conv\.weight|conv\.modulation\.weight|conv\.modulation\.bias|bias)",
                     name)
    if m:
        res = 4 if m[2] is None else 2 ** (int(m[2]) + 3)
        what = {"conv.weight": "weight", "conv.modulation.weight": "affine.weight",
                "conv.modulation.bias": "affine.bias", "bias": "bias"}[m[3]]
        return f"synthesis.b{res}.torgb.{what}"
    raise Refused(f"the generator holds {name}, which facesynth has no place for")


def discriminator(sd: dict, resolution: int, channel_base: int, channel_max: int) -> OfficialNetwork:
    kwargs = dict(c_dim=0, img_resolution=resolution, img_channels=3, architecture="resnet",
                  channel_base=channel_base, channel_max=channel_max,
                  epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=1))
    out = {}
    for name, t in sd.items():
        if name.endswith(".kernel"):
            _fir_buffer(name, t, 1.0)
            continue
        key = _discriminator_name(name, resolution)
        out[key] = t
    return OfficialNetwork("Discriminator", kwargs, out)


def _discriminator_name(name: str, top: int) -> str:
    if name == "convs.0.0.weight":
        return f"b{top}.fromrgb.weight"
    if name == "convs.0.1.bias":
        return f"b{top}.fromrgb.bias"
    m = re.fullmatch(r"convs\.(\d+)\.(conv1\.0\.weight|conv1\.1\.bias|conv2\.1\.weight|conv2\.2\.bias|skip\.1\.weight)",
                     name)
    if m:
        res = top // 2 ** (int(m[1]) - 1)
        what = {"conv1.0.weight": "conv0.weight", "conv1.1.bias": "conv0.bias", "conv2.1.weight": "conv1.weight",
                "conv2.2.bias": "conv1.bias", "skip.1.weight": "skip.weight"}[m[2]]
        return f"b{res}.{what}"
    table = {"final_conv.0.weight": "b4.conv.weight", "final_conv.1.bias": "b4.conv.bias",
             "final_linear.0.weight": "b4.fc.weight", "final_linear.0.bias": "b4.fc.bias",
             "final_linear.1.weight": "b4.out.weight", "final_linear.1.bias": "b4.out.bias"}
    if name in table:
        return table[name]
    raise Refused(f"the discriminator holds {name}, which facesynth has no place for")


def _reshape(net: OfficialNetwork) -> OfficialNetwork:
    """rosinality keeps a batch axis on its modulated weights and the toRGB bias as [1, 3, 1, 1]."""
    for k, t in list(net.tensors.items()):
        if re.search(r"\.(conv0|conv1|torgb)\.weight$", k) and t.ndim == 5:
            net.tensors[k] = t[0]
        elif k.endswith("torgb.bias") or k.endswith("const"):
            net.tensors[k] = t.reshape(t.shape[1:]) if k.endswith("const") and t.ndim == 4 else t.reshape(-1)
    return net


def networks_of(data: dict) -> dict[str, OfficialNetwork]:
    """G_ema (and G and D when present) of a rosinality checkpoint, in stylegan2-ada's layout."""
    out = {}
    for key, prefix in (("g_ema", "G_ema"), ("g", "G")):
        sd = data.get(key)
        if sd is not None:
            if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
                raise FacesynthError(f"its {key} is not a state dict of tensors")
            out[prefix] = _reshape(generator(sd, key))
    if not out:
        raise FacesynthError("it holds neither g_ema nor g")
    latent_avg = data.get("latent_avg")
    if torch.is_tensor(latent_avg):
        for net in out.values():
            net.tensors["mapping.w_avg"] = latent_avg.reshape(-1)
    d = data.get("d")
    if isinstance(d, dict):
        g = next(iter(out.values())).kwargs
        out["D"] = discriminator(d, g["img_resolution"], g["synthesis_kwargs"]["channel_base"],
                                 g["synthesis_kwargs"]["channel_max"])
    return out


def random_checkpoint(resolution: int = 16, style_dim: int = 32, n_mlp: int = 2, channel_multiplier: int = 1,
                      with_d: bool = True, latent_avg: bool = True, seed: int = 0) -> dict:
    """A checkpoint laid out as rosinality's train.py saves one (g_ema, g, d, latent_avg, args), with random
    weights at the scales its layers keep them: test data for the importer and for benchmarks of big models
    (config F is ``random_checkpoint(1024, 512, 8, 2)``)."""
    import argparse

    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, offset=0.0):
        return torch.randn(*shape, generator=gen) * scale + offset

    ch = {2 ** i: min(16384 * channel_multiplier // 2 ** i, 512) for i in range(2, 11)}
    fir = DEFAULT_FIR.clone()
    sd = {}
    for i in range(1, n_mlp + 1):  # stored divided by the 0.01 learning-rate multiplier
        sd[f"style.{i}.weight"], sd[f"style.{i}.bias"] = rnd(style_dim, style_dim, scale=100), rnd(style_dim, scale=.1)
    sd["input.input"] = rnd(1, ch[4], 4, 4)

    def styled(prefix: str, cin: int, cout: int, k: int = 3, noise: bool = True) -> None:
        sd[f"{prefix}.conv.weight"] = rnd(1, cout, cin, k, k)
        sd[f"{prefix}.conv.modulation.weight"] = rnd(cin, style_dim)
        sd[f"{prefix}.conv.modulation.bias"] = rnd(cin, scale=0.1, offset=1.0)
        if noise:
            sd[f"{prefix}.noise.weight"], sd[f"{prefix}.activate.bias"] = rnd(1, scale=.1), rnd(cout, scale=.1)
        else:
            sd[f"{prefix}.bias"] = rnd(1, 3, 1, 1, scale=0.1)

    styled("conv1", ch[4], ch[4])
    styled("to_rgb1", ch[4], 3, 1, noise=False)
    res = [2 ** i for i in range(3, int(math.log2(resolution)) + 1)]
    for j, r in enumerate(res):
        styled(f"convs.{2 * j}", ch[r // 2], ch[r])
        sd[f"convs.{2 * j}.conv.blur.kernel"] = fir * 4
        styled(f"convs.{2 * j + 1}", ch[r], ch[r])
        styled(f"to_rgbs.{j}", ch[r], 3, 1, noise=False)
        sd[f"to_rgbs.{j}.upsample.kernel"] = fir * 4
    for i in range(2 * len(res) + 1):
        r = 2 ** ((i + 5) // 2)
        sd[f"noises.noise_{i}"] = rnd(1, 1, r, r)
    ckpt = {"g_ema": sd, "g": {k: v if k.endswith("kernel") else v + 0.01 for k, v in sd.items()},
            "args": argparse.Namespace(size=resolution, n_mlp=n_mlp, latent=style_dim)}
    if latent_avg:
        ckpt["latent_avg"] = rnd(style_dim)
    if with_d:
        d = {"convs.0.0.weight": rnd(ch[resolution], 3, 1, 1), "convs.0.1.bias": rnd(ch[resolution])}
        for j, r in enumerate(reversed(res), start=1):
            d[f"convs.{j}.conv1.0.weight"], d[f"convs.{j}.conv1.1.bias"] = rnd(ch[r], ch[r], 3, 3), rnd(ch[r])
            d[f"convs.{j}.conv2.0.kernel"], d[f"convs.{j}.skip.0.kernel"] = fir.clone(), fir.clone()
            d[f"convs.{j}.conv2.1.weight"], d[f"convs.{j}.conv2.2.bias"] = rnd(ch[r // 2], ch[r], 3, 3), rnd(ch[r // 2])
            d[f"convs.{j}.skip.1.weight"] = rnd(ch[r // 2], ch[r], 1, 1)
        d["final_conv.0.weight"], d["final_conv.1.bias"] = rnd(ch[4], ch[4] + 1, 3, 3), rnd(ch[4])
        d["final_linear.0.weight"], d["final_linear.0.bias"] = rnd(ch[4], ch[4] * 16), rnd(ch[4])
        d["final_linear.1.weight"], d["final_linear.1.bias"] = rnd(1, ch[4]), rnd(1)
        ckpt["d"] = d
    return ckpt
