"""What one layer costs, in the words every search space, profile, simulator and predictor share.

A `CostKey` describes a layer well enough to build and time it alone; its canonical string (``str(key)``,
parsed back by `parse_cost_key`) is the key of a profile's block table and of a predictor's block costs. A
`LayerCost` is a key with its multiply-accumulates, parameters and primitive convolutions (`ConvSpec`), which is
what analytic models (the FPGA simulator, roofline estimates) read. Spaces produce `LayerCost`s for their
architectures (`SearchSpace.layer_costs`); MobileNet-style networks derive them from timm block strings
(`search_spaces.blocks`).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

# What a layer can run in (`CostKey.precision`); fp32 keys carry no suffix. int4: 4-bit weights, 8-bit activations;
# fp16 / bf16: 16-bit floats, weights and activations (a GPU's half-precision units).
PRECISIONS = ("fp32", "int8", "int4", "fp16", "bf16")
HALF_PRECISIONS = ("fp16", "bf16")
# Bits per weight of each precision: the order in which a precision compresses more (fp32 least, int4 most).
PRECISION_BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8, "int4": 4}


@dataclass(frozen=True)
class CostKey:
    """Canonical description of one layer, enough to build and time it in isolation.

    Shared by lookup tables, simulators and predictors; `str(key)` is its canonical string. Fields after `groups`
    were added later: each appears in the string only when it differs from its default, so keys that do not use
    them keep the strings tables already store.
    """

    op: str                   # stem, head, classifier or a block type (ds, dsa, ir, er, cn, uir)
    in_shape: tuple[int, int, int]   # (C, H, W)
    out_shape: tuple[int, int, int]
    kernel: int = 1           # uir: the middle depthwise kernel (0 = none); mixed: the largest of `kernels`
    stride: int = 1
    expansion: float = 1.0
    se: int = 0               # SE reduced channels (0 = no SE)
    act: str = "relu"
    skip: bool = False
    family: str = "mobilenetv3"
    groups: int = 1           # groups of the 1x1 convolutions (channel shuffle when > 1)
    kernels: tuple[int, ...] = ()   # ir: mixed depthwise kernels, one per channel split (MixNet); () = `kernel`
    exp_splits: int = 1       # ir: the 1x1 expansion conv split into this many channel splits (MixNet `a1.1`)
    proj_splits: int = 1      # ir: the 1x1 projection conv split likewise (MixNet `p1.1`)
    start: int = 0            # uir: depthwise kernel before the expansion (0 = none)
    end: int = 0              # uir: depthwise kernel after the projection (0 = none)
    layer_scale: bool = False   # uir: a learned per-channel scale of the output
    norm: bool = False        # head: BatchNorm + activation after the head conv (MobileNetV4)
    same_pad: bool = False    # TensorFlow 'same' padding on a strided conv: a separate pad op (timm's Conv2dSame)
    precision: str = "fp32"   # what the layer runs in: fp32, or int8 / int4 / fp16 / bf16 under a compression policy

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.kernels:
            object.__setattr__(self, "kernels", tuple(self.kernels))
            if len(self.kernels) < 2 or self.kernel != max(self.kernels):
                raise ValueError(f"mixed kernels {self.kernels} need two or more, `kernel` their largest "
                                 f"(got {self.kernel})")

    def __str__(self) -> str:
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        se = f"_se{self.se}" if self.se else ""
        groups = f"_g{self.groups}" if self.groups > 1 else ""
        skip = "_skip" if self.skip else ""
        new = (f"_a{self.start}" if self.start else "") + (f"_p{self.end}" if self.end else "") + \
            (f"_mk{'.'.join(map(str, self.kernels))}" if self.kernels else "") + \
            (f"_ma{self.exp_splits}" if self.exp_splits > 1 else "") + \
            (f"_mp{self.proj_splits}" if self.proj_splits > 1 else "")
        flags = ("_ls" if self.layer_scale else "") + ("_bn" if self.norm else "") + \
            ("_same" if self.same_pad else "") + (f"_{self.precision}" if self.precision != "fp32" else "")
        return (f"{self.op}_k{self.kernel}_s{self.stride}_e{self.expansion:g}{new}{groups}{se}_{self.act}{skip}"
                f"{flags}_i{c}x{h}x{w}_o{oc}x{oh}x{ow}_{self.family}")


@dataclass(frozen=True)
class ConvSpec:
    """One primitive 2-D convolution (a linear layer is a 1x1 conv at 1x1), square feature maps.

    What analytic models (the FPGA simulator, roofline estimates) need to cost a layer.
    """

    cin: int
    cout: int
    kernel: int
    stride: int
    hw_in: int
    hw_out: int
    groups: int = 1
    bias: bool = False

    @property
    def weights(self) -> int:
        return self.cout * (self.cin // self.groups) * self.kernel * self.kernel

    @property
    def macs(self) -> int:
        return self.weights * self.hw_out * self.hw_out

    @property
    def params(self) -> int:
        return self.weights + (self.cout if self.bias else 0)


@dataclass(frozen=True)
class LayerCost:
    """One layer's cost key with its multiply-accumulates, parameters and primitive convolutions.

    `params` also counts BatchNorm's affine parameters, which `convs` do not hold.
    """

    key: CostKey
    macs: int
    params: int
    convs: tuple[ConvSpec, ...] = ()

    @classmethod
    def of(cls, key: CostKey, convs: list[ConvSpec], norm_params: int = 0) -> LayerCost:
        """A layer made of `convs` (plus `norm_params` BatchNorm parameters)."""
        return cls(key, sum(c.macs for c in convs), sum(c.params for c in convs) + norm_params, tuple(convs))


_KEY_RE = re.compile(r"^(?P<op>[a-z]+)_k(?P<k>\d+)_s(?P<s>\d+)_e(?P<e>[\d.]+)(?:_a(?P<a>\d+))?(?:_p(?P<p>\d+))?"
                     r"(?:_mk(?P<mk>\d+(?:\.\d+)+))?(?:_ma(?P<ma>\d+))?(?:_mp(?P<mp>\d+))?"
                     r"(?:_g(?P<g>\d+))?(?:_se(?P<se>\d+))?"
                     r"_(?P<act>[a-z0-9_]+?)(?P<skip>_skip)?(?P<ls>_ls)?(?P<bn>_bn)?(?P<same>_same)?"
                     r"(?:_(?P<prec>int8|int4|fp16|bf16))?"
                     r"_i(?P<c>\d+)x(?P<h>\d+)x(?P<w>\d+)"
                     r"_o(?P<oc>\d+)x(?P<oh>\d+)x(?P<ow>\d+)_(?P<family>[a-z0-9]+)$")


def unpadded_key(text: str) -> str | None:
    """The key string of the same layer with symmetric padding, if `text` is a layer with TensorFlow 'same'
    padding (`CostKey.same_pad`); None otherwise."""
    if "_same_i" not in text:
        return None
    key = parse_cost_key(text)
    return str(dataclasses.replace(key, same_pad=False)) if key.same_pad else None


def parse_cost_key(text: str) -> CostKey:
    """The `CostKey` whose canonical string is `text` (inverse of `str(key)`); ValueError if malformed."""
    m = _KEY_RE.match(text)
    if m is None:
        raise ValueError(f"not a cost key: {text!r}")
    shape = lambda *names: tuple(int(m[n]) for n in names)  # noqa: E731
    kernels = tuple(int(k) for k in m["mk"].split(".")) if m["mk"] else ()
    return CostKey(m["op"], shape("c", "h", "w"), shape("oc", "oh", "ow"), int(m["k"]), int(m["s"]), float(m["e"]),
                   int(m["se"] or 0), m["act"], bool(m["skip"]), m["family"], int(m["g"] or 1), kernels,
                   int(m["ma"] or 1), int(m["mp"] or 1), int(m["a"] or 0), int(m["p"] or 0), bool(m["ls"]),
                   bool(m["bn"]), bool(m["same"]), m["prec"] or "fp32")
