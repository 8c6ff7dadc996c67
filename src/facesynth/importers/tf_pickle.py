"""StyleGAN2's TensorFlow pickles: a tuple (G, D, Gs) of ``dnnlib.tflib.network.Network`` states.

The restricted unpickler gives each Network as an inert ``TFNetwork`` (its ``build_module_src`` is data, never
run).  Its ``static_kwargs`` and variables are brought into stylegan2-ada-pytorch's layout following the
conventions NVIDIA's own ``legacy.py`` documents: TF keeps convolution weights as [kh, kw, in, out] and dense
ones as [in, out]; its up-sampling convolutions (and the resnet generator's up-sampled shortcut) hold the
spatially flipped kernel; its style biases are stored minus one; the noise maps are numbered per layer; and
its ``fmap_base`` counts channels at half the resolution, so channel_base is twice it.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..errors import FacesynthError
from .official import OfficialNetwork, Refused
from .safe_pickle import TFNetwork


def is_tf_pickle(data) -> bool:
    return isinstance(data, TFNetwork) or (
        isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetwork) for n in data))


def _variables(net: TFNetwork, prefix: str = "", out: dict | None = None, depth: int = 0) -> dict[str, np.ndarray]:
    """Every variable of a network and its components, named by path ('synthesis/4x4/Conv/weight')."""
    out = {} if out is None else out
    if depth > 16:
        raise FacesynthError("TF network components nest too deeply")
    for item in net.variables:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise FacesynthError(f"a TF variable of {prefix or 'the network'} is not a (name, value) pair")
        name, value = item
        out[prefix + name] = np.asarray(value)
    for name, comp in net.components.items():
        if not isinstance(comp, TFNetwork):
            raise FacesynthError(f"TF component {prefix}{name} is a {type(comp).__name__}, not a network")
        _variables(comp, f"{prefix}{name}/", out, depth + 1)
    return out


class _Kwargs:
    """static_kwargs read with defaults; any key left unread at the end is refused, as legacy.py does."""

    def __init__(self, given: dict, which: str):
        self.given, self.which, self.read = dict(given), which, set()

    def __call__(self, name, default=None, none=None):
        self.read.add(name)
        value = self.given.get(name, default)
        return value if value is not None else none

    def ignore(self, *names):
        self.read.update(names)

    def finish(self):
        extra = sorted(set(self.given) - self.read)
        if extra:
            raise Refused(f"the TF {self.which} has arguments facesynth does not know: {', '.join(extra)}")


def _check_version(net: TFNetwork, which: str, build_funcs: tuple[str, ...]) -> None:
    if not isinstance(net.version, int) or net.version < 4:
        raise Refused(f"the TF {which} is from network format version {net.version!r}; StyleGAN2's is 4 or later")
    func = net.state.get("build_func_name")
    if func not in build_funcs:
        raise Refused(f"the TF {which} is built by {func!r}, not StyleGAN2's {' or '.join(build_funcs)} "
                      "(StyleGAN 1 and other TF networks are not imported)")


def _conv(w, flip=False):
    w = np.asarray(w)
    if flip:
        w = w[::-1, ::-1]
    return w.transpose(3, 2, 0, 1)


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float32)))


def _lod_renamed(params: dict, prefix: str, layer: str, resolution: int) -> bool:
    """Rename progressive-style layers ('ToRGB_lod2/weight') to their resolution ('8x8/ToRGB/weight'), as
    networks in the 'orig' form name them; True if there were any."""
    found = False
    for name in list(params):
        m = re.fullmatch(rf"{prefix}{layer}_lod(\d+)/(.*)", name)
        if m:
            r = resolution // 2 ** int(m[1])
            params[f"{prefix}{r}x{r}/{layer}/{m[2]}"] = params.pop(name)
            found = True
    return found


def generator(net: TFNetwork) -> OfficialNetwork:
    _check_version(net, "generator", ("G_main",))
    kw = _Kwargs(net.static_kwargs, "generator")
    res = kw("resolution", 1024)
    params = _variables(net)
    arch = kw("architecture", "skip")
    if _lod_renamed(params, "synthesis/", "ToRGB", res):
        arch = "orig"
    kwargs = dict(
        z_dim=kw("latent_size", 512), c_dim=kw("label_size", 0), w_dim=kw("dlatent_size", 512),
        img_resolution=res, img_channels=kw("num_channels", 3),
        mapping_kwargs=dict(num_layers=kw("mapping_layers", 8), embed_features=kw("label_fmaps"),
                            layer_features=kw("mapping_fmaps"), activation=kw("mapping_nonlinearity", "lrelu"),
                            lr_multiplier=kw("mapping_lrmul", 0.01), w_avg_beta=kw("w_avg_beta", 0.995, none=1)),
        synthesis_kwargs=dict(channel_base=kw("fmap_base", 16384) * 2, channel_max=kw("fmap_max", 512),
                              num_fp16_res=kw("num_fp16_res", 0), conv_clamp=kw("conv_clamp"), architecture=arch,
                              resample_filter=kw("resample_kernel", [1, 3, 3, 1]), use_noise=kw("use_noise", True),
                              activation=kw("nonlinearity", "lrelu")))
    kw.ignore("truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure")
    kw.finish()
    return OfficialNetwork("Generator", kwargs, {k: _tensor(v) for k, v in _generator_tensors(params).items()})


def _generator_tensors(p: dict) -> dict:
    out = {}
    for name, v in p.items():
        if name == "lod":  # progressive growing's level of detail: always 0 in a StyleGAN2 network
            continue
        if name == "dlatent_avg":
            out["mapping.w_avg"] = v
            continue
        m = re.fullmatch(r"mapping/(LabelEmbed|Dense(\d+))/(weight|bias)", name)
        if m:
            key = "mapping.embed" if m[1] == "LabelEmbed" else f"mapping.fc{m[2]}"
            out[f"{key}.{m[3]}"] = v.T if m[3] == "weight" else v
            continue
        m = re.fullmatch(r"synthesis/noise(\d+)", name)
        if m:
            i = int(m[1])  # noise 0 feeds 4x4's conv; then two per resolution
            r = 2 ** ((i + 5) // 2)
            out[f"synthesis.b{r}.{'conv1' if i % 2 == 0 else 'conv0'}.noise_const"] = v[0, 0]
            continue
        if name == "synthesis/4x4/Const/const":
            out["synthesis.b4.const"] = v[0]
            continue
        m = re.fullmatch(r"synthesis/(\d+)x\1/(Conv|Conv0_up|Conv1|ToRGB|Skip)/(\w+)", name)
        if not m:
            raise Refused(f"the TF generator holds {name}, which facesynth has no place for")
        r, layer, what = m[1], m[2], m[3]
        dest = {"Conv": "conv1", "Conv0_up": "conv0", "Conv1": "conv1", "ToRGB": "torgb", "Skip": "skip"}[layer]
        flip = layer in ("Conv0_up", "Skip")
        value = {"weight": lambda: _conv(v, flip), "bias": lambda: v, "noise_strength": lambda: v,
                 "mod_weight": lambda: v.T, "mod_bias": lambda: v + 1}.get(what)
        if value is None:
            raise Refused(f"the TF generator holds {name}, which facesynth has no place for")
        target = {"mod_weight": "affine.weight", "mod_bias": "affine.bias"}.get(what, what)
        out[f"synthesis.b{r}.{dest}.{target}"] = value()
    return out


def discriminator(net: TFNetwork) -> OfficialNetwork:
    _check_version(net, "discriminator", ("D_stylegan2",))
    kw = _Kwargs(net.static_kwargs, "discriminator")
    res = kw("resolution", 1024)
    params = _variables(net)
    arch = kw("architecture", "resnet")
    if _lod_renamed(params, "", "FromRGB", res):
        arch = "orig"
    fmaps = kw("mapping_fmaps")
    kwargs = dict(
        c_dim=kw("label_size", 0), img_resolution=res, img_channels=kw("num_channels", 3), architecture=arch,
        channel_base=kw("fmap_base", 16384) * 2, channel_max=kw("fmap_max", 512), num_fp16_res=kw("num_fp16_res", 0),
        conv_clamp=kw("conv_clamp"), cmap_dim=fmaps,
        block_kwargs=dict(activation=kw("nonlinearity", "lrelu"), resample_filter=kw("resample_kernel", [1, 3, 3, 1]),
                          freeze_layers=kw("freeze_layers", 0)),
        mapping_kwargs=dict(num_layers=kw("mapping_layers", 0), embed_features=fmaps, layer_features=fmaps,
                            activation=kw("nonlinearity", "lrelu"), lr_multiplier=kw("mapping_lrmul", 0.1)),
        epilogue_kwargs=dict(mbstd_group_size=kw("mbstd_group_size"),
                             mbstd_num_channels=kw("mbstd_num_features", 1), activation=kw("nonlinearity", "lrelu")))
    kw.ignore("structure")
    kw.finish()
    return OfficialNetwork("Discriminator", kwargs,
                           {k: _tensor(v) for k, v in _discriminator_tensors(params).items()})


def _discriminator_tensors(p: dict) -> dict:
    out = {}
    for name, v in p.items():
        m = re.fullmatch(r"(LabelEmbed|Mapping(\d+))/(weight|bias)", name)
        if m:
            key = "mapping.embed" if m[1] == "LabelEmbed" else f"mapping.fc{m[2]}"
            out[f"{key}.{m[3]}"] = v.T if m[3] == "weight" else v
            continue
        m = re.fullmatch(r"(?:(\d+)x\1/(FromRGB|Conv0|Conv1_down|Skip|Conv|Dense0)|(Output))/(weight|bias)", name)
        if not m:
            raise Refused(f"the TF discriminator holds {name}, which facesynth has no place for")
        layer, what = m[2] or m[3], m[4]
        dest = {"FromRGB": "fromrgb", "Conv0": "conv0", "Conv1_down": "conv1", "Skip": "skip", "Conv": "conv",
                "Dense0": "fc", "Output": "out"}[layer]
        r = m[1] or "4"
        if what == "bias":
            value = v
        elif layer in ("Dense0", "Output"):
            value = v.T
        else:
            value = _conv(v)
        out[f"b{r}.{dest}.{what}"] = value
    return out


def networks_of(data) -> dict[str, OfficialNetwork]:
    """G, D and G_ema of a TF pickle (a lone Network is taken as the EMA generator, Gs)."""
    if isinstance(data, TFNetwork):
        return {"G_ema": generator(data)}
    tf_g, tf_d, tf_gs = data
    return {"G": generator(tf_g), "D": discriminator(tf_d), "G_ema": generator(tf_gs)}

