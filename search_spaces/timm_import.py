"""Recover a `NetworkDef` from a timm MobileNet-style model by reading its modules.

`network_def_from_timm("mobilenetv3_large_100")` (or an already-built model) gives back the timm block strings and
model-level settings that `search_spaces.blocks` costs and builds, so any timm `EfficientNet` / `MobileNetV3`
network made of `ds` / `dsa` / `ir` / `er` / `cn` / `uir` blocks (MobileNets V1-V4 without attention, MixNet's
mixed-kernel `ir` blocks, EfficientNets, ...) can be priced on a profile without hand-writing its definition.

Only what the cost model represents is accepted; anything else (CondConv or attention blocks, dilated kernels,
mixed kernels outside an `ir` block's depthwise conv, other SE layouts or gates, anti-aliasing, ...) raises one
`ValueError` naming the model and the feature. TensorFlow 'same' padding (timm's tf_ ports) is recorded as
`pad_type="same"`: it changes no shape, but each strided conv pads its input in a separate operation, which costs
time (about a tenth of a MobileNetV3 at batch 32 on a GPU). BatchNorm eps/momentum are not recorded: they change
neither the shapes nor the cost.
"""
from __future__ import annotations

from typing import Any

from timm.layers import make_divisible

from search_spaces.blocks import NetworkDef, _se_channels, act_name

# option letters of timm's `_decode_block_str` for a per-block activation
_ACT_OPTIONS = {"relu": "nre", "relu6": "nr6", "hard_swish": "nhs", "swish": "nsw", "mish": "nmi"}
_SAME_PAD_CONVS = ("Conv2dSame", "Conv2dSameExport")   # dynamic 'same' padding: same output shapes as timm's ''
_MAX_DIGITS = 8


class _Unsupported(Exception):
    """A model feature the cost model cannot represent (re-raised as ValueError naming the model)."""


def network_def_from_timm(name_or_model: Any, *, num_classes: int | None = None, resolution: int = 224
                          ) -> NetworkDef:
    """The `NetworkDef` of a timm MobileNet-style model, recovered from its modules.

    Args:
        name_or_model: a timm model name (created with `pretrained=False` on the meta device, so nothing is
            downloaded or initialised) or an already-built timm `EfficientNet` / `MobileNetV3`.
        num_classes: classifier outputs; None keeps the model's (for a name: timm's default).
        resolution: input resolution recorded in the result (the modules do not fix it).

    Returns:
        A `NetworkDef` whose `count_macs` / `count_params` / `build_network` match the model exactly.

    Raises:
        ValueError: the model uses a block, SE layout, head or activation the cost model does not support.
    """
    model = _create(name_or_model, num_classes) if isinstance(name_or_model, str) else name_or_model
    name = name_or_model if isinstance(name_or_model, str) else _model_name(model)
    try:
        return _read_network(model, num_classes, resolution)
    except _Unsupported as err:
        raise ValueError(f"timm model {name}: {err} is not supported by the cost model") from None


def _create(name: str, num_classes: int | None):
    import timm
    import torch

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):   # shapes are all we read: skip weight init and memory
        return timm.create_model(name, pretrained=False, **kwargs)


def _model_name(model: Any) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def _family(model: Any) -> str:
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3

    families = {EfficientNet: "efficientnet", MobileNetV3: "mobilenetv3"}
    if type(model) not in families:
        raise _Unsupported(f"model class {type(model).__name__} (expected EfficientNet or MobileNetV3)")
    return families[type(model)]


def _read_network(model: Any, num_classes: int | None, resolution: int) -> NetworkDef:
    family = _family(model)
    stem = _conv(model.conv_stem, "stem conv")
    if stem["kernel"] != 3 or stem["stride"] != 2 or stem["groups"] != 1 or stem["bias"]:
        raise _Unsupported(f"stem conv {model.conv_stem} (expected 3x3 stride 2 without bias)")
    act = _norm_act(model.bn1, "stem")
    if act not in _ACT_OPTIONS:
        raise _Unsupported(f"default activation {act!r}")
    chs = _divisible(stem["out"], "stem channels")
    reader = _BlockReader(family, act, chs)
    arch_def = tuple(reader.stage(stage) for stage in model.blocks)
    if len(reader.layer_scales) > 1:
        raise _Unsupported("layer scale on some uir blocks only (timm sets it for the whole model)")
    num_features, head_norm = _read_head(model, family, act, reader.chs)
    classes = model.num_classes if num_classes is None else num_classes
    return NetworkDef(arch_def=arch_def, family=family, stem_size=chs, num_features=num_features, act=act,
                      resolution=resolution, num_classes=classes, in_chans=stem["in"], head_norm=head_norm,
                      layer_scale=True in reader.layer_scales, pad_type=_pad_type(model))


def _pad_type(model: Any) -> str:
    """timm's `pad_type` of the model: "same" when its strided convs pad at run time (`Conv2dSame`), "" when they
    are padded symmetrically. Stride-1 odd-kernel convs are padded alike under both and tell nothing."""
    from torch import nn

    kinds = {"same" if type(conv).__name__ in _SAME_PAD_CONVS else ""
             for conv in model.modules() if isinstance(conv, nn.Conv2d)
             and (conv.stride != (1, 1) or any(k % 2 == 0 for k in conv.kernel_size))}
    if len(kinds) > 1:
        raise _Unsupported("'same' padding on some strided convolutions only")
    return kinds.pop() if kinds else ""


def _conv(conv: Any, what: str) -> dict[str, Any]:
    """Validated geometry of a square, undilated convolution with timm's default (or shape-equal) padding."""
    from torch import nn

    if not isinstance(conv, nn.Conv2d):
        raise _Unsupported(f"{what} of type {type(conv).__name__} (mixed-kernel or conditional convolution)")
    (k, kw), (s, sw) = conv.kernel_size, conv.stride
    if k != kw or s != sw:
        raise _Unsupported(f"{what} with non-square kernel or stride {conv.kernel_size}/{conv.stride}")
    if conv.dilation != (1, 1):
        raise _Unsupported(f"{what} with dilation {conv.dilation}")
    pad = ((s - 1) + (k - 1)) // 2
    if type(conv).__name__ not in _SAME_PAD_CONVS and tuple(conv.padding) != (pad, pad):
        raise _Unsupported(f"{what} with padding {conv.padding}")
    return {"in": conv.in_channels, "out": conv.out_channels, "kernel": k, "stride": s, "groups": conv.groups,
            "bias": conv.bias is not None}


def _mixed(conv: Any, what: str, depthwise: bool) -> dict[str, Any]:
    """`_conv`'s geometry of a conv that may be a timm `MixedConv2d` (MixNet): then `kernel` lists the kernel of
    each channel split, after checking the splits are timm's `_split_channels` and each part is depthwise (or
    dense) as `depthwise` says."""
    from timm.layers.mixed_conv2d import MixedConv2d, _split_channels

    if not isinstance(conv, MixedConv2d):
        return _conv(conv, what)
    parts = [_conv(part, f"{what} split {i}") for i, part in enumerate(conv.values())]
    ins, outs = [p["in"] for p in parts], [p["out"] for p in parts]
    if ins != _split_channels(sum(ins), len(parts)) or outs != _split_channels(sum(outs), len(parts)) or \
            (depthwise and ins != outs) or len({p["stride"] for p in parts}) != 1 or any(p["bias"] for p in parts) \
            or any(p["groups"] != (p["in"] if depthwise else 1) for p in parts):
        raise _Unsupported(f"{what} MixedConv2d with splits {ins}->{outs} (expected timm's channel split, "
                           f"{'depthwise' if depthwise else 'dense'} parts, one stride, no bias)")
    chs = sum(ins)
    return {"in": chs, "out": sum(outs), "kernel": [p["kernel"] for p in parts], "stride": parts[0]["stride"],
            "groups": chs if depthwise else 1, "bias": False}


def _ks(kernel: int | list[int]) -> str:
    """A kernel as timm's block strings write it (mixed kernels joined by dots: ``3.5.7``)."""
    return ".".join(map(str, kernel)) if isinstance(kernel, list) else str(kernel)


def _norm_act(bn: Any, what: str, apply_act: bool = True) -> str:
    """Activation name after a timm BatchNormAct2d (checks it is an affine BatchNorm)."""
    from timm.layers import BatchNormAct2d
    from torch import nn

    if type(bn) is not BatchNormAct2d or bn.weight is None:
        raise _Unsupported(f"{what} normalisation {type(bn).__name__} (expected affine BatchNorm)")
    has_act = not isinstance(bn.act, nn.Identity)
    if has_act != apply_act:
        raise _Unsupported(f"{what} {'with' if has_act else 'without'} an activation after its BatchNorm")
    return act_name(type(bn.act), "none") if has_act else "none"


def _divisible(chs: int, what: str) -> int:
    if make_divisible(chs) != chs:
        raise _Unsupported(f"{what} {chs} (timm's builder would round it to {make_divisible(chs)})")
    return chs


def _decimal(value: float, ok) -> str:
    """Shortest decimal string (2 digits or more) of `value` for which `ok(float(string))` holds."""
    for digits in range(2, _MAX_DIGITS + 1):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        if ok(float(text)):
            return text
    raise _Unsupported(f"ratio {value!r} that no {_MAX_DIGITS}-digit decimal reproduces")


def _chain(cin: int, *convs: tuple[dict[str, Any], bool]) -> int:
    """Checks the (conv, is_depthwise) chain is wired from `cin` without bias; returns the first conv's outputs."""
    chs = cin
    for conv, depthwise in convs:
        groups = chs if depthwise else 1
        if conv["in"] != chs or conv["bias"] or conv["groups"] != groups or (depthwise and conv["out"] != chs):
            raise _Unsupported(f"{'depthwise' if depthwise else 'pointwise'} conv {conv['in']}->{conv['out']} "
                               f"with groups {conv['groups']}{' and bias' if conv['bias'] else ''} after {chs} "
                               f"channels (expected groups {groups}, no bias)")
        chs = conv["out"]
    return convs[0][0]["out"]


class _BlockReader:
    """Turns timm blocks into block strings while tracking the running channel count."""

    def __init__(self, family: str, act: str, chs: int) -> None:
        self.family, self.act, self.chs = family, act, chs
        self._probe = NetworkDef(arch_def=(), family=family)   # carries the family for `_se_channels`
        self.layer_scales: set[bool] = set()   # whether each uir block read has a layer scale

    def stage(self, stage: Any) -> tuple[str, ...]:
        """One stage's block strings, consecutive identical blocks merged into `_rN` repeats."""
        groups: list[list[Any]] = []   # [stride of first block, options, repeats]
        for i, block in enumerate(stage):
            stride, options = self.block(block)
            if i and stride != 1:
                raise _Unsupported(f"stride {stride} in block {i} of a stage (timm strides a stage's first block)")
            if groups and groups[-1][1] == options:
                groups[-1][2] += 1
            else:
                groups.append([stride, options, 1])
        return tuple("_".join([opts[0], f"r{n}", opts[1], f"s{s}", *opts[2:]]) for s, opts, n in groups)

    def block(self, block: Any) -> tuple[int, tuple[str, ...]]:
        """(stride, string options without repeats and stride: type first, kernel second)."""
        from timm.models._efficientnet_blocks import (ConvBnAct, DepthwiseSeparableConv, EdgeResidual,
                                                      InvertedResidual, UniversalInvertedResidual)

        readers = {InvertedResidual: self._ir, DepthwiseSeparableConv: self._ds, ConvBnAct: self._cn,
                   EdgeResidual: self._er, UniversalInvertedResidual: self._uir}
        if type(block) not in readers:
            raise _Unsupported(f"block {type(block).__name__}")
        if getattr(block, "conv_s2d", None) is not None:
            raise _Unsupported("space-to-depth block")
        if type(getattr(block, "aa", None)).__name__ not in ("Identity", "NoneType"):
            raise _Unsupported("anti-aliased downsampling")
        cin = self.chs
        stride, cout, opts = readers[type(block)](block, cin)
        if block.has_skip and not (cin == cout and stride == 1):
            raise _Unsupported(f"residual={block.has_skip} in a {opts[0]} block of {cin}->{cout} stride {stride}")
        self.chs = cout
        return stride, opts

    def _ir(self, block: Any, cin: int) -> tuple[int, int, tuple[str, ...]]:
        """InvertedResidual; MixNet's has `MixedConv2d`s: mixed depthwise kernels, 1x1 convs split in channels."""
        pw, dw, pwl = (_mixed(c, f"ir {n} conv", n == "depthwise") for c, n in
                       ((block.conv_pw, "expansion"), (block.conv_dw, "depthwise"), (block.conv_pwl, "projection")))
        for conv, n in ((pw, "expansion"), (pwl, "projection")):
            if isinstance(conv["kernel"], list) and set(conv["kernel"]) != {1}:
                raise _Unsupported(f"ir {n} MixedConv2d with kernels {conv['kernel']} (only 1x1 splits)")
        mid = _chain(cin, (pw, False), (dw, True), (pwl, False))
        act = _norm_act(block.bn1, "ir")
        if _norm_act(block.bn2, "ir") != act:
            raise _Unsupported("different activations inside one ir block")
        _norm_act(block.bn3, "ir projection", apply_act=False)
        exp = _decimal(mid / cin, lambda e: make_divisible(cin * e) == mid)
        kernels = [f"a{_ks(pw['kernel'])}"] if pw["kernel"] != 1 else []
        kernels += [f"p{_ks(pwl['kernel'])}"] if pwl["kernel"] != 1 else []
        opts = ["ir", f"k{_ks(dw['kernel'])}", *kernels, f"e{exp}", f"c{_divisible(pwl['out'], 'ir out channels')}"]
        opts += self._se(block.se, mid, float(exp), act) + self._act(act)
        skip = (cin == pwl["out"] and dw["stride"] == 1)
        return dw["stride"], pwl["out"], tuple(opts + (["noskip"] if skip and not block.has_skip else []))

    def _uir(self, block: Any, cin: int) -> tuple[int, int, tuple[str, ...]]:
        """UniversalInvertedResidual (MobileNetV4): [start dw] -> 1x1 expansion -> [middle dw] -> [SE] -> 1x1
        projection -> [end dw] -> [layer scale]; each conv a ConvNormAct, activations after the expansion and
        the middle conv only."""
        from torch import nn

        convs = {}   # name -> (conv geometry, BatchNormAct, is depthwise)
        for name in ("dw_start", "pw_exp", "dw_mid", "pw_proj", "dw_end"):
            module = getattr(block, name)
            if isinstance(module, nn.Identity) and name.startswith("dw"):
                continue
            if type(module).__name__ != "ConvNormAct":
                raise _Unsupported(f"uir {name} of type {type(module).__name__} (expected ConvNormAct)")
            if type(getattr(module, "aa", None)).__name__ not in ("Identity", "NoneType"):
                raise _Unsupported("anti-aliased downsampling")
            convs[name] = (_conv(module.conv, f"uir {name} conv"), module.bn, name.startswith("dw"))
        _chain(cin, *((conv, dw) for conv, _, dw in convs.values()))
        if convs["pw_exp"][0]["kernel"] != 1 or convs["pw_proj"][0]["kernel"] != 1:
            raise _Unsupported("uir expansion or projection conv that is not 1x1")
        act = _norm_act(convs["pw_exp"][1], "uir expansion")
        for name, (_, bn, _) in convs.items():
            if name != "pw_exp" and _norm_act(bn, f"uir {name}", apply_act=name == "dw_mid") not in (act, "none"):
                raise _Unsupported("different activations inside one uir block")
        # timm strides the middle depthwise conv, else the start one, else the end one
        strided = next((n for n in ("dw_mid", "dw_start", "dw_end") if n in convs), None)
        stride = convs[strided][0]["stride"] if strided else 1
        if any(conv["stride"] != 1 for name, (conv, _, _) in convs.items() if name != strided):
            raise _Unsupported(f"uir block strided elsewhere than timm's builder strides it ({strided})")
        mid, cout = convs["pw_exp"][0]["out"], convs["pw_proj"][0]["out"]
        exp = _decimal(mid / cin, lambda e: make_divisible(cin * e) == mid)
        kernel = lambda name: convs[name][0]["kernel"] if name in convs else 0  # noqa: E731
        opts = ["uir", f"k{kernel('dw_mid')}"] + [f"{letter}{kernel(name)}" for letter, name in
                                                   (("a", "dw_start"), ("p", "dw_end")) if name in convs]
        opts += [f"e{exp}", f"c{_divisible(cout, 'uir out channels')}"]
        opts += self._se(block.se, mid, float(exp), act) + self._act(act)
        scale = block.layer_scale
        if type(scale).__name__ == "LayerScale2d" and tuple(scale.gamma.shape) == (cout,):
            self.layer_scales.add(True)
        elif isinstance(scale, nn.Identity):
            self.layer_scales.add(False)
        else:
            raise _Unsupported(f"uir layer scale {scale}")
        skip = cin == cout and stride == 1
        return stride, cout, tuple(opts + (["noskip"] if skip and not block.has_skip else []))

    def _ds(self, block: Any, cin: int) -> tuple[int, int, tuple[str, ...]]:
        """`ds`, or `dsa` when the pointwise conv has an activation too (LCNet, MobileNetV1; never a skip)."""
        bt = "dsa" if block.has_pw_act else "ds"
        dw, pw = _conv(block.conv_dw, f"{bt} depthwise conv"), _conv(block.conv_pw, f"{bt} pointwise conv")
        _chain(cin, (dw, True), (pw, False))
        act = _norm_act(block.bn1, bt)
        if _norm_act(block.bn2, f"{bt} pointwise", apply_act=block.has_pw_act) not in (act, "none"):
            raise _Unsupported(f"different activations inside one {bt} block")
        kernels = [f"p{pw['kernel']}"] if pw["kernel"] != 1 else []
        opts = [bt, f"k{dw['kernel']}", *kernels, f"c{_divisible(pw['out'], f'{bt} out channels')}"]
        opts += self._se(block.se, cin, 1.0, act) + self._act(act)
        skip = bt == "ds" and cin == pw["out"] and dw["stride"] == 1
        return dw["stride"], pw["out"], tuple(opts + (["noskip"] if skip and not block.has_skip else []))

    def _er(self, block: Any, cin: int) -> tuple[int, int, tuple[str, ...]]:
        """EdgeResidual: a dense kxk expansion conv (carrying the stride), then a 1x1 projection."""
        exp_conv, pwl = _conv(block.conv_exp, "er expansion conv"), _conv(block.conv_pwl, "er projection conv")
        mid = _chain(cin, (exp_conv, False), (pwl, False))
        act = _norm_act(block.bn1, "er")
        _norm_act(block.bn2, "er projection", apply_act=False)
        exp = _decimal(mid / cin, lambda e: make_divisible(cin * e) == mid)
        kernels = [f"p{pwl['kernel']}"] if pwl["kernel"] != 1 else []
        opts = ["er", f"k{exp_conv['kernel']}", *kernels, f"e{exp}", f"c{_divisible(pwl['out'], 'er out channels')}"]
        opts += self._se(block.se, mid, float(exp), act) + self._act(act)
        skip = cin == pwl["out"] and exp_conv["stride"] == 1
        return exp_conv["stride"], pwl["out"], tuple(opts + (["noskip"] if skip and not block.has_skip else []))

    def _cn(self, block: Any, cin: int) -> tuple[int, int, tuple[str, ...]]:
        conv = _conv(block.conv, "cn conv")
        if conv["in"] != cin or conv["groups"] != 1 or conv["bias"]:
            raise _Unsupported(f"cn conv {block.conv} after {cin} channels (expected dense, no bias)")
        act = _norm_act(block.bn1, "cn")
        opts = ["cn", f"k{conv['kernel']}", f"c{_divisible(conv['out'], 'cn out channels')}", *self._act(act)]
        return conv["stride"], conv["out"], tuple(opts + (["skip"] if block.has_skip else []))

    def _act(self, act: str) -> list[str]:
        if act == self.act:
            return []
        if act not in _ACT_OPTIONS:
            raise _Unsupported(f"block activation {act!r}")
        return [_ACT_OPTIONS[act]]

    def _se(self, se: Any, chs: int, exp: float, act: str) -> list[str]:
        """`se<ratio>` reproducing the SE width under the family's rule (checks layout and gate too)."""
        from timm.models._efficientnet_blocks import SqueezeExcite
        from torch import nn

        if isinstance(se, nn.Identity):
            return []
        if type(se) is not SqueezeExcite:
            raise _Unsupported(f"attention layer {type(se).__name__}")
        gate, se_act = act_name(type(se.gate), "none"), act_name(type(se.act1), "none")
        want = ("hard_sigmoid", "relu") if self.family == "mobilenetv3" else ("sigmoid", act)
        if (gate, se_act) != want:
            raise _Unsupported(f"SE with {gate} gate and {se_act} activation in the {self.family} family "
                               f"(expected {want[0]} gate, {want[1]} activation)")
        rd = se.conv_reduce.out_channels
        if se.conv_reduce.in_channels != chs or se.conv_reduce.bias is None or se.conv_expand.bias is None:
            raise _Unsupported(f"SE layout {se}")

        def ok(ratio: float) -> bool:
            # both the cost model's formula and timm's builder (which divides by exp first) must give rd
            built = make_divisible(chs * ratio) if self.family == "mobilenetv3" else round(chs * (ratio / exp))
            return built == rd == _se_channels(self._probe, chs, ratio, exp)

        target = rd / chs if self.family == "mobilenetv3" else rd * exp / chs
        try:
            return ["se0.25" if ok(0.25) else f"se{_decimal(target, ok)}"]
        except _Unsupported:
            rule = "make_divisible(channels * ratio)" if self.family == "mobilenetv3" else "round(channels * ratio)"
            raise _Unsupported(f"SE width {rd} of {chs} channels (the {self.family} rule {rule} cannot give it)"
                               ) from None


def _read_head(model: Any, family: str, act: str, chs: int) -> tuple[int, bool]:
    """(head channels (0 = none), head_norm), after checking the head matches what `blocks` assumes for the family.

    head_norm: a MobileNetV3-class head whose 1x1 conv (no bias) is followed by BatchNorm + activation (MobileNetV4).
    """
    from torch import nn

    if getattr(model.global_pool, "pool_type", None) != "avg":
        raise _Unsupported(f"global pooling {model.global_pool}")
    head_norm = False
    if family == "mobilenetv3":
        head = _conv(model.conv_head, "head conv")
        head_norm = not isinstance(model.norm_head, nn.Identity)
        if head["kernel"] != 1 or head["groups"] != 1 or head["bias"] == head_norm or head["in"] != chs:
            raise _Unsupported(f"head conv {model.conv_head} (expected 1x1 after pooling, with bias unless a "
                               f"BatchNorm follows)")
        if head_norm:
            head_act = _norm_act(model.norm_head, "head")
            if not isinstance(model.act2, nn.Identity):
                raise _Unsupported(f"head activation {model.act2} after the head's BatchNorm and activation")
        else:
            head_act = act_name(type(model.act2), "none")
    elif isinstance(model.conv_head, nn.Identity):
        return 0, False
    else:
        head = _conv(model.conv_head, "head conv")
        if head["kernel"] != 1 or head["groups"] != 1 or head["bias"] or head["in"] != chs:
            raise _Unsupported(f"head conv {model.conv_head} (expected 1x1 without bias before BatchNorm)")
        head_act = _norm_act(model.bn2, "head")
    if head_act != act:
        raise _Unsupported(f"head activation {head_act!r} differing from the model's {act!r}")
    return head["out"], head_norm
