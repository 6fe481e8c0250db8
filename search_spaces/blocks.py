"""Networks described by timm block strings: costing without building, and building with timm's builder.

A `NetworkDef` is the plain-data description every MobileNet-style architecture lowers to: a timm `arch_def`
(stages of block strings such as ``ir_r2_k5_s2_e6_c40_se0.25``) plus the few model-level settings timm's
`EfficientNet` / `MobileNetV3` classes take. Block types: `ds` / `dsa` (depthwise separable), `ir` (inverted
residual, also MixNet's: depthwise kernels mixed over channel splits ``k3.5.7``, 1x1 convs split ``a1.1`` /
``p1.1``), `er` (edge residual), `cn` (conv-BN-act) and `uir` (MobileNetV4's universal inverted residual:
optional start / middle / end depthwise convs, optional layer scale); MobileNetV4's normalised head too.
From it this module derives, without building any module:

- per-layer `LayerCost`s: the canonical cost key shared by lookup tables and predictors, multiply-accumulates
  and parameters;
- whole-network MACs and parameters (their sums).

`build_network` makes the real `nn.Module` with timm. The two must agree exactly; `tests/test_mobilenet_space.py`
checks MACs against `torch.utils.flop_counter` and parameters against `nn.Module.parameters()`.

FLOPs convention: the project reports multiply-accumulates ("FLOPs" as the NAS literature quotes them:
MobileNetV2-1.0 = 300M). `torch.utils.flop_counter` counts 2 per MAC.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from timm.layers import make_divisible

from search_spaces.costs import ConvSpec, CostKey, LayerCost
from search_spaces.layers import kept_channels

FAMILIES = ("mobilenetv3", "efficientnet")
MAX_STRIDE = 32   # timm's builder (output_stride=32) dilates, rather than strides, beyond this
BLOCK_TYPES = ("ds", "dsa", "ir", "er", "cn", "uir")   # timm block types the cost model represents (`CostKey.op`)
PAD_TYPES = ("", "same")   # timm's `pad_type`: its default (symmetric) or TensorFlow's 'same' (the tf_ ports)
_OPTIONAL_FIELDS = ("head_norm", "layer_scale", "pad_type")   # NetworkDef fields JSON leaves out at their default
_LAYER_SCALE_INIT = 1e-5   # timm MobileNetV4's layer scale init (any value costs the same)
_ACT_NAMES = {"relu": "relu", "relu6": "relu6", "hardswish": "hard_swish", "silu": "swish", "swish": "swish",
              "mish": "mish", "gelu": "gelu", "hardsigmoid": "hard_sigmoid", "sigmoid": "sigmoid"}


@dataclass(frozen=True)
class NetworkDef:
    """A whole network as timm block strings plus model-level settings.

    Args:
        arch_def: stages of timm block strings (repeats `_rN` allowed), as timm's `decode_arch_def` takes.
        family: "mobilenetv3" (timm `MobileNetV3`: 1x1 head conv after pooling, hard-sigmoid SE sized from the
            expanded channels) or "efficientnet" (timm `EfficientNet`, e.g. MobileNetV2: 1x1 head conv + BN
            before pooling, sigmoid SE sized from the block input).
        stem_size: stem convolution output channels (3x3, stride 2).
        num_features: head convolution channels (0 = no head conv, efficientnet family only).
        act: default activation name for blocks without their own (timm names: relu, relu6, hard_swish, swish).
        resolution: square input resolution.
        num_classes: classifier outputs.
        in_chans: input channels.
        head_norm: mobilenetv3 family only: BatchNorm + activation after the head conv, which has no bias
            (timm's `head_norm=True`, MobileNetV4).
        layer_scale: mobilenetv3 family only: a learned per-channel scale at the end of every `uir` block
            (timm's `layer_scale_init_value`; the value does not change the cost).
        pad_type: timm's `pad_type`: "" (symmetric padding) or "same" (TensorFlow's, as timm's tf_ ports have:
            a strided convolution pads its input by a separate, asymmetric pad operation; shapes and MACs are
            those of "", the time is not).
    """

    arch_def: tuple[tuple[str, ...], ...]
    family: str = "mobilenetv3"
    stem_size: int = 16
    num_features: int = 1280
    act: str = "hard_swish"
    resolution: int = 224
    num_classes: int = 1000
    in_chans: int = 3
    head_norm: bool = False
    layer_scale: bool = False
    pad_type: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown network family {self.family!r}; expected one of: {', '.join(FAMILIES)}")
        if self.pad_type not in PAD_TYPES:
            raise ValueError(f"unknown pad_type {self.pad_type!r}; expected '' (symmetric) or 'same'")
        if (self.head_norm or self.layer_scale) and self.family != "mobilenetv3":
            raise ValueError("head_norm and layer_scale exist in the mobilenetv3 family only (timm's MobileNetV3)")
        object.__setattr__(self, "arch_def", tuple(tuple(stage) for stage in self.arch_def))


def network_def_to_json(net: NetworkDef) -> str:
    """`net` as one line of JSON (what a profile's extra-network table stores; `network_def_from_json` reads it).

    Fields added later (`head_norm`, `layer_scale`, `pad_type`) are left out at their default, so a network that does not
    use them has the same JSON as before they existed.
    """
    data = dataclasses.asdict(net)
    for name in _OPTIONAL_FIELDS:
        if data[name] == NetworkDef.__dataclass_fields__[name].default:
            del data[name]
    return json.dumps(data, separators=(",", ":"))


def network_def_from_json(text: str) -> NetworkDef:
    """The `NetworkDef` `network_def_to_json` wrote; ValueError naming what is wrong otherwise."""
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"not a network definition (JSON): {err}") from None
    fields = {f.name for f in dataclasses.fields(NetworkDef)}
    if not isinstance(data, dict) or not isinstance(data.get("arch_def"), list) or set(data) - fields:
        raise ValueError(f"not a network definition: expected an object with arch_def and the fields "
                         f"{', '.join(sorted(fields - {'arch_def'}))}")
    return NetworkDef(**data)


@dataclass
class _Walk:
    """Running channel/spatial state while walking a network's layers."""

    chs: int
    hw: int
    layers: list[LayerCost] = field(default_factory=list)


def _conv_out(hw: int, kernel: int, stride: int) -> int:
    # timm's default padding ('' -> symmetric ((s - 1) + (k - 1)) // 2)
    pad = ((stride - 1) + (kernel - 1)) // 2
    return (hw + 2 * pad - kernel) // stride + 1


def _conv(cin: int, cout: int, k: int, hw_in: int, stride: int = 1, groups: int = 1, bias: bool = False) -> ConvSpec:
    """A convolution with timm's default padding."""
    return ConvSpec(cin, cout, k, stride, hw_in, _conv_out(hw_in, k, stride), groups, bias)


def _same_pad(net: NetworkDef, convs: list[ConvSpec]) -> bool:
    """Whether `net`'s padding gives one of `convs` a separate pad operation: under 'same' padding timm pads a
    strided (or even-kernel) conv at run time (`Conv2dSame`); the others get the symmetric padding of ''."""
    return net.pad_type == "same" and any(c.stride > 1 or c.kernel % 2 == 0 for c in convs)


def act_name(act: Any, default: str) -> str:
    """Canonical activation name for a timm act layer (class, name or None = model default)."""
    if act is None:
        return default
    name = act if isinstance(act, str) else getattr(act, "__name__", str(act))
    return _ACT_NAMES.get(name.lower().replace("_", ""), name.lower())


def _se_channels(net: NetworkDef, chs: int, se_ratio: float, exp_ratio: float) -> int:
    """SE reduced channels exactly as timm sizes them for each family."""
    if not se_ratio:
        return 0
    if net.family == "mobilenetv3":   # se_from_exp=True, rd_round_fn=round_channels
        return make_divisible(chs * se_ratio)
    return round(chs * se_ratio / exp_ratio)   # se_from_exp=False, rd_round_fn=round


def _splits(kernel: Any, what: str) -> int:
    """Channel splits of an `ir` block's 1x1 conv: 1 for a plain conv, n for MixNet's ``a1.1`` (`MixedConv2d`)."""
    if not isinstance(kernel, list):
        return 1
    if set(kernel) != {1}:
        raise ValueError(f"mixed {what} kernels {kernel} (only 1x1 splits are supported by the cost model)")
    return len(kernel)


def _split_convs(cin: int, cout: int, kernels: list[int], hw: int, stride: int = 1, depthwise: bool = False
                 ) -> list[ConvSpec]:
    """The convolutions of a timm `MixedConv2d`: channels split with timm's `_split_channels`, one kernel each."""
    from timm.layers.mixed_conv2d import _split_channels

    ins, outs = _split_channels(cin, len(kernels)), _split_channels(cout, len(kernels))
    return [_conv(i, o, k, hw, stride, groups=i if depthwise else 1) for k, i, o in zip(kernels, ins, outs)]


@dataclass
class _Parts:
    """One block's convolutions in order, its BatchNorm parameters, the kernel its key names, the channels an SE
    module would squeeze, its expansion ratio and the key's block-type-specific fields."""

    convs: list[ConvSpec]
    norm: int
    kernel: int
    se_in: int
    exp: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def _er_parts(net: NetworkDef, ba: dict[str, Any], cin: int, cout: int, hw: int) -> _Parts:
    """EdgeResidual: one dense kxk expansion (strided) instead of 1x1 + depthwise, then 1x1."""
    exp = float(ba["exp_ratio"])
    mid, k = make_divisible(cin * exp), ba["exp_kernel_size"]
    first = _conv(cin, mid, k, hw, ba["stride"])
    return _Parts([first, _conv(mid, cout, ba.get("pw_kernel_size", 1), first.hw_out)], 2 * (mid + cout), k, mid, exp)


def _ir_parts(net: NetworkDef, ba: dict[str, Any], cin: int, cout: int, hw: int) -> _Parts:
    """InvertedResidual, MixNet's too: depthwise kernels mixed over channel splits, 1x1 convs split
    (`MixedConv2d`)."""
    exp = float(ba["exp_ratio"])
    mid = make_divisible(cin * exp)
    k, exp_k, pw_k = ba["dw_kernel_size"], ba.get("exp_kernel_size", 1), ba.get("pw_kernel_size", 1)
    extra = dict(exp_splits=_splits(exp_k, "expansion"), proj_splits=_splits(pw_k, "projection"))
    if isinstance(k, list):
        dws = _split_convs(mid, mid, k, hw, ba["stride"], depthwise=True)
        k, extra["kernels"] = max(k), tuple(k)
    else:
        dws = [_conv(mid, mid, k, hw, ba["stride"], groups=mid)]
    hw_dw = dws[0].hw_out
    pws = _split_convs(cin, mid, exp_k, hw) if isinstance(exp_k, list) else [_conv(cin, mid, exp_k, hw)]
    pwls = _split_convs(mid, cout, pw_k, hw_dw) if isinstance(pw_k, list) else [_conv(mid, cout, pw_k, hw_dw)]
    return _Parts(pws + dws + pwls, 2 * (mid + mid + cout), k, mid, exp, extra)


def _uir_parts(net: NetworkDef, ba: dict[str, Any], cin: int, cout: int, hw: int) -> _Parts:
    """UniversalInvertedResidual (MobileNetV4): optional start / middle / end depthwise convs around the 1x1
    expansion and projection, one BN per conv, an optional layer scale; the key's `kernel` is the middle one.

    timm strides the middle depthwise conv, else the start one, else the end one.
    """
    start, k, end, stride = ba["dw_kernel_size_start"], ba["dw_kernel_size_mid"], ba["dw_kernel_size_end"], ba["stride"]
    if stride > 1 and not (start or k or end):
        raise ValueError(f"a strided uir block without a depthwise conv cannot be built: {ba}")
    exp = float(ba["exp_ratio"])
    mid = make_divisible(cin * exp)
    parts, bn, h = [], 0, hw
    if start:
        parts.append(_conv(cin, cin, start, h, 1 if k else stride, groups=cin))
        bn, h = bn + 2 * cin, parts[-1].hw_out
    parts.append(_conv(cin, mid, 1, h))
    if k:
        parts.append(_conv(mid, mid, k, h, stride, groups=mid))
        h = parts[-1].hw_out
    parts.append(_conv(mid, cout, 1, h))
    if end:
        parts.append(_conv(cout, cout, end, h, 1 if start or k else stride, groups=cout))
    bn += 2 * (mid + (mid if k else 0) + cout + (cout if end else 0))
    bn += cout if net.layer_scale else 0   # the scale's per-channel parameters
    return _Parts(parts, bn, k, mid, exp, dict(start=start, end=end, layer_scale=net.layer_scale))


def _ds_parts(net: NetworkDef, ba: dict[str, Any], cin: int, cout: int, hw: int) -> _Parts:
    """Depthwise separable; ``dsa`` has an activation after the pointwise conv too (LCNet, MobileNetV1)."""
    k = ba["dw_kernel_size"]
    dw = _conv(cin, cin, k, hw, ba["stride"], groups=cin)
    return _Parts([dw, _conv(cin, cout, ba.get("pw_kernel_size", 1), dw.hw_out)], 2 * (cin + cout), k, cin)


def _cn_parts(net: NetworkDef, ba: dict[str, Any], cin: int, cout: int, hw: int) -> _Parts:
    """Conv-BN-act."""
    k = ba["kernel_size"]
    return _Parts([_conv(cin, cout, k, hw, ba["stride"])], 2 * cout, k, 0)


_PARTS = {"er": _er_parts, "ir": _ir_parts, "uir": _uir_parts, "ds": _ds_parts, "dsa": _ds_parts, "cn": _cn_parts}


def _block_cost(net: NetworkDef, ba: dict[str, Any], walk: _Walk) -> LayerCost:
    """Cost of one decoded timm block; advances `walk`."""
    bt, cin, hw = ba["block_type"], walk.chs, walk.hw
    cout, stride = make_divisible(ba["out_chs"]), ba["stride"]
    if ba.get("s2d") or ba.get("num_experts") or ba.get("group_size") or ba.get("force_in_chs") or \
            bt not in BLOCK_TYPES:
        raise ValueError(f"block type {bt!r} with these options is not supported by the cost model: {ba}")
    if bt != "ir" and any(isinstance(v, list) for v in ba.values()):
        raise ValueError(f"mixed kernels in a {bt!r} block are not supported by the cost model: {ba}")
    p = _PARTS[bt](net, ba, cin, cout, hw)
    if bt == "cn":   # a conv-BN-act block has a skip only when asked for; the others unless told not to
        skip = bool(ba.get("skip")) and cin == cout and stride == 1
    else:
        skip = cin == cout and stride == 1 and not ba.get("noskip")
    hw_out, se, se_ratio = p.convs[-1].hw_out, 0, ba.get("se_ratio") or 0.0
    if se_ratio and p.se_in:
        se = _se_channels(net, p.se_in, se_ratio, p.exp)
        p.convs += [_conv(p.se_in, se, 1, 1, bias=True), _conv(se, p.se_in, 1, 1, bias=True)]
    key = CostKey(bt, (cin, hw, hw), (cout, hw_out, hw_out), p.kernel, stride, p.exp, se,
                  act_name(ba.get("act_layer"), net.act), skip, net.family, same_pad=_same_pad(net, p.convs),
                  **p.extra)
    walk.chs, walk.hw = cout, hw_out
    return LayerCost.of(key, p.convs, p.norm)


def pruned_ir_cost(layer: LayerCost, keep: float) -> LayerCost | None:
    """An inverted residual (``ir``, plain 1x1 and depthwise convolutions) that structured pruning left with
    `kept_channels` of its expansion channels (`search_spaces.layers.prune_expansion`), under the key of the same
    block with the expansion they amount to, so `build_layer` builds it; None for any other layer, or where timm's
    rounding of that expansion would not give those channels back."""
    key = layer.key
    if key.op != "ir" or key.kernels or key.exp_splits > 1 or key.proj_splits > 1:
        return None
    cin, hw = key.in_shape[0], key.in_shape[1]
    kept = kept_channels(make_divisible(cin * key.expansion), keep)
    expansion = float(f"{kept / cin:g}")
    if make_divisible(cin * expansion) != kept:
        return None
    dw = _conv(kept, kept, key.kernel, hw, key.stride, groups=kept)
    convs = [_conv(cin, kept, 1, hw), dw, _conv(kept, key.out_shape[0], 1, dw.hw_out)]
    if key.se:
        convs += [_conv(kept, key.se, 1, 1, bias=True), _conv(key.se, kept, 1, 1, bias=True)]
    return LayerCost.of(dataclasses.replace(key, expansion=expansion), convs, 2 * (kept + kept + key.out_shape[0]))


def decode_blocks(net: NetworkDef) -> list[list[dict[str, Any]]]:
    """timm block kwargs per stage (repeats expanded), via timm's own decoder."""
    from timm.models._efficientnet_builder import decode_arch_def

    try:
        return decode_arch_def([list(s) for s in net.arch_def])
    except (AssertionError, KeyError, ValueError, IndexError) as err:
        raise ValueError(f"cannot decode timm block strings {net.arch_def}: {err!r}") from None


def layer_costs(net: NetworkDef) -> list[LayerCost]:
    """Every layer of `net` (stem, blocks, head, classifier) with its cost key, MACs and params."""
    res, stem = net.resolution, make_divisible(net.stem_size)
    conv = _conv(net.in_chans, stem, 3, res, 2)
    walk = _Walk(stem, conv.hw_out)
    walk.layers.append(LayerCost.of(CostKey("stem", (net.in_chans, res, res), (stem, conv.hw_out, conv.hw_out), 3, 2,
                                            act=net.act, family=net.family, same_pad=_same_pad(net, [conv])),
                                    [conv], 2 * stem))
    total_stride = 2
    for stage in decode_blocks(net):
        total_stride *= stage[0]["stride"] if stage else 1
        if total_stride > MAX_STRIDE:   # timm's builder turns the stride into dilation there: another network
            raise ValueError(f"the blocks stride the input by {total_stride}, more than {MAX_STRIDE}: timm would "
                             f"dilate the rest instead, which the cost model does not represent: {net.arch_def}")
        for i, ba in enumerate(stage):
            # timm's builder applies a stage's stride to its first block only
            walk.layers.append(_block_cost(net, dict(ba, stride=ba["stride"] if i == 0 else 1), walk))
    chs, hw = walk.chs, walk.hw
    head_key = CostKey("head", (chs, hw, hw), (net.num_features, 1, 1), act=net.act, family=net.family,
                       norm=net.head_norm)
    feats = net.num_features
    if net.head_norm:                 # MobileNetV4: pool -> 1x1 conv without bias -> BN -> act -> linear
        walk.layers.append(LayerCost.of(head_key, [_conv(chs, net.num_features, 1, 1)], 2 * net.num_features))
    elif net.family == "mobilenetv3":   # pool -> 1x1 conv with bias -> act -> linear
        walk.layers.append(LayerCost.of(head_key, [_conv(chs, net.num_features, 1, 1, bias=True)]))
    elif net.num_features > 0:          # 1x1 conv + BN + act at full resolution -> pool -> linear
        walk.layers.append(LayerCost.of(head_key, [_conv(chs, net.num_features, 1, hw)], 2 * net.num_features))
    else:
        feats = chs
    walk.layers.append(LayerCost.of(CostKey("classifier", (feats, 1, 1), (net.num_classes, 1, 1), act="none",
                                            family=net.family), [_conv(feats, net.num_classes, 1, 1, bias=True)]))
    return walk.layers


def count_macs(net: NetworkDef) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (convolutions and linear layers)."""
    return sum(layer.macs for layer in layer_costs(net))


def count_params(net: NetworkDef) -> int:
    """Trainable parameters (weights, biases, BN affine)."""
    return sum(layer.params for layer in layer_costs(net))


def build_network(net: NetworkDef, **kwargs: Any):
    """Build `net` as a timm model (randomly initialised; nothing is downloaded).

    Args:
        net: the network description.
        **kwargs: passed to the timm model class (e.g. drop_rate).

    Returns:
        A `timm.models.MobileNetV3` or `timm.models.EfficientNet` module.
    """
    from timm.layers import get_act_layer
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models._efficientnet_builder import round_channels
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3
    from torch import nn

    common = dict(block_args=decode_blocks(net), num_classes=net.num_classes, in_chans=net.in_chans,
                  stem_size=net.stem_size, num_features=net.num_features, act_layer=get_act_layer(net.act),
                  pad_type=net.pad_type, **kwargs)
    if net.family == "mobilenetv3":
        se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU,
                           rd_round_fn=round_channels)
        return MobileNetV3(se_layer=se_layer, se_from_exp=True, head_bias=True, head_norm=net.head_norm,
                           layer_scale_init_value=_LAYER_SCALE_INIT if net.layer_scale else None, **common)
    return EfficientNet(**common)


def build_layer(key: CostKey):
    """A standalone module computing exactly the layer `key` describes (for timing it alone).

    Input shape is (1, *key.in_shape). Built from the same timm blocks `build_network` uses, with the SE width
    and gate of the key's family, and TensorFlow 'same' padding where the key says so.
    """
    from timm.layers import create_conv2d, get_act_layer
    from timm.models._efficientnet_blocks import (ConvBnAct, DepthwiseSeparableConv, EdgeResidual,
                                                  InvertedResidual, SqueezeExcite, UniversalInvertedResidual)
    from torch import nn

    cin, cout = key.in_shape[0], key.out_shape[0]
    act = get_act_layer(key.act) if key.act != "none" else None
    mnv3 = key.family == "mobilenetv3"
    pad = "same" if key.same_pad else ""
    se_layer = None
    if key.se:
        se_layer = (partial(SqueezeExcite, rd_channels=key.se, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU)
                    if mnv3 else partial(SqueezeExcite, rd_channels=key.se))
    if key.op == "stem":
        return nn.Sequential(create_conv2d(cin, cout, 3, stride=2, padding=pad), nn.BatchNorm2d(cout), act())
    if key.op == "ir":   # lists make timm's MixedConv2d (MixNet)
        split = lambda n: [1] * n if n > 1 else 1  # noqa: E731
        return InvertedResidual(cin, cout, dw_kernel_size=list(key.kernels) if key.kernels else key.kernel,
                                stride=key.stride, exp_ratio=key.expansion, exp_kernel_size=split(key.exp_splits),
                                pw_kernel_size=split(key.proj_splits), act_layer=act, se_layer=se_layer,
                                noskip=not key.skip, pad_type=pad)
    if key.op == "uir":
        return UniversalInvertedResidual(cin, cout, dw_kernel_size_start=key.start, dw_kernel_size_mid=key.kernel,
                                         dw_kernel_size_end=key.end, stride=key.stride, exp_ratio=key.expansion,
                                         act_layer=act, se_layer=se_layer, noskip=not key.skip, pad_type=pad,
                                         layer_scale_init_value=_LAYER_SCALE_INIT if key.layer_scale else None)
    if key.op in ("ds", "dsa"):
        return DepthwiseSeparableConv(cin, cout, dw_kernel_size=key.kernel, stride=key.stride, act_layer=act,
                                      se_layer=se_layer, noskip=not key.skip, pw_act=key.op == "dsa", pad_type=pad)
    if key.op == "er":
        return EdgeResidual(cin, cout, exp_kernel_size=key.kernel, stride=key.stride, exp_ratio=key.expansion,
                            act_layer=act, se_layer=se_layer, noskip=not key.skip, pad_type=pad)
    if key.op == "cn":
        return ConvBnAct(cin, cout, key.kernel, stride=key.stride, act_layer=act, skip=key.skip, pad_type=pad)
    if key.op == "head":
        conv = nn.Conv2d(cin, cout, 1, bias=mnv3 and not key.norm)
        if key.norm:
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), conv, nn.BatchNorm2d(cout), act())
        if mnv3:
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), conv, act())
        return nn.Sequential(conv, nn.BatchNorm2d(cout), act(), nn.AdaptiveAvgPool2d(1))
    if key.op == "classifier":
        return nn.Sequential(nn.Flatten(), nn.Linear(cin, cout))
    raise ValueError(f"cannot build a layer for cost key op {key.op!r}")
