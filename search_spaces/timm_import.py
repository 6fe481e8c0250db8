"""Recover a `NetworkDef` from a timm MobileNet-style model by reading its modules.

`network_def_from_timm("mobilenetv3_large_100")` (or an already-built model) gives back the timm block strings and
model-level settings that `search_spaces.blocks` costs and builds, so any timm `EfficientNet` / `MobileNetV3`
network made of `ds` / `dsa` / `ir` / `er` / `cn` blocks can be priced on a profile without hand-writing its definition.

Only what the cost model represents is accepted; anything else (CondConv, UIR or attention blocks,
mixed or dilated kernels, other SE layouts or gates, a normalised MobileNetV3 head, ...) raises one `ValueError`
naming the model and the feature. Padding mode ('same' for tf_ ports) and BatchNorm eps/momentum are not
recorded: they change neither the shapes nor the cost, but a model built from the result will not reproduce a
tf_ model's outputs.
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
    num_features = _read_head(model, family, act, reader.chs)
    classes = model.num_classes if num_classes is None else num_classes
    return NetworkDef(arch_def=arch_def, family=family, stem_size=chs, num_features=num_features, act=act,
                      resolution=resolution, num_classes=classes, in_chans=stem["in"])


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
                                                      InvertedResidual)

        readers = {InvertedResidual: self._ir, DepthwiseSeparableConv: self._ds, ConvBnAct: self._cn,
                   EdgeResidual: self._er}
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
        pw, dw, pwl = (_conv(c, f"ir {n} conv") for c, n in
                       ((block.conv_pw, "expansion"), (block.conv_dw, "depthwise"), (block.conv_pwl, "projection")))
        mid = _chain(cin, (pw, False), (dw, True), (pwl, False))
        act = _norm_act(block.bn1, "ir")
        if _norm_act(block.bn2, "ir") != act:
            raise _Unsupported("different activations inside one ir block")
        _norm_act(block.bn3, "ir projection", apply_act=False)
        exp = _decimal(mid / cin, lambda e: make_divisible(cin * e) == mid)
        kernels = [f"a{pw['kernel']}"] if pw["kernel"] != 1 else []
        kernels += [f"p{pwl['kernel']}"] if pwl["kernel"] != 1 else []
        opts = ["ir", f"k{dw['kernel']}", *kernels, f"e{exp}", f"c{_divisible(pwl['out'], 'ir out channels')}"]
        opts += self._se(block.se, mid, float(exp), act) + self._act(act)
        skip = (cin == pwl["out"] and dw["stride"] == 1)
        return dw["stride"], pwl["out"], tuple(opts + (["noskip"] if skip and not block.has_skip else []))

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


def _read_head(model: Any, family: str, act: str, chs: int) -> int:
    """Head channels (0 = none), after checking the head matches what `blocks` assumes for the family."""
    from torch import nn

    if getattr(model.global_pool, "pool_type", None) != "avg":
        raise _Unsupported(f"global pooling {model.global_pool}")
    if family == "mobilenetv3":
        if not isinstance(model.norm_head, nn.Identity):
            raise _Unsupported("MobileNetV3 head_norm (BatchNorm after the head conv, as in MobileNetV4)")
        head = _conv(model.conv_head, "head conv")
        if head["kernel"] != 1 or head["groups"] != 1 or not head["bias"] or head["in"] != chs:
            raise _Unsupported(f"head conv {model.conv_head} (expected 1x1 with bias after pooling)")
        head_act = act_name(type(model.act2), "none")
    elif isinstance(model.conv_head, nn.Identity):
        return 0
    else:
        head = _conv(model.conv_head, "head conv")
        if head["kernel"] != 1 or head["groups"] != 1 or head["bias"] or head["in"] != chs:
            raise _Unsupported(f"head conv {model.conv_head} (expected 1x1 without bias before BatchNorm)")
        head_act = _norm_act(model.bn2, "head")
    if head_act != act:
        raise _Unsupported(f"head activation {head_act!r} differing from the model's {act!r}")
    return head["out"]
