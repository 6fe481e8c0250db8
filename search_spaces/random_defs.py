"""Random MobileNet-family networks as timm block strings: training data for predictors of networks outside a space.

A latency predictor learned only from one search space's blocks and networks extrapolates on anything else (a
timm model, a user's variant of one): its block model has never seen the channel counts, block types or
resolutions, and its network correction only knows the space's encoding. `random_network_def(rng)` draws
networks spread over what MobileNet-family models are made of (`ds`, `dsa`, `ir`, `er` and `cn` blocks; kernels
3-7; expansions 1-8; squeeze-excite; ReLU, ReLU6, hard-swish and swish; width 0.25-1.75x; resolutions 96-288; both
timm families), so a profile that times them (`python -m hardware_profiles.measure ... --random-networks N`)
gives the block model neighbours for any such block and the network model examples of whole networks that are
not points of the space. Other generators fill what it leaves out: plain depthwise-separable stacks
(MobileNetV1/LCNet), MixNet/MobileNetV4-like networks and TensorFlow-padded ones; `random_defs(kind, n, seed)`
draws `n` of one kind (`GENERATORS`). Every draw costs exactly (`search_spaces.blocks`) and builds with timm.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from timm.layers import make_divisible

from search_spaces.blocks import NetworkDef

BASE_CHANNELS = (16, 24, 40, 80, 112, 160, 320)   # MobileNetV2/V3-like stage widths at 1.0x
STRIDES = (1, 2, 2, 2, 1, 2, 1)
RESOLUTIONS = (96, 128, 160, 192, 224, 256, 288)
FAMILY_ACTS = {"mobilenetv3": ("hard_swish", "relu"), "efficientnet": ("relu", "relu6", "swish")}
ACT_OPTIONS = {"relu": "nre", "hard_swish": "nhs", "swish": "nsw", "relu6": "nr6"}


def _block(rng: np.random.Generator, stage: int, repeats: int, stride: int, chs: int, act: str) -> str:
    """One stage's block string: the block type depends on the depth (dense `er` and `cn` where maps are big)."""
    if stage == 0:
        kind = rng.choice(["ds", "dsa", "ir"], p=[0.4, 0.2, 0.4])
    else:
        kind = rng.choice(["ir", "er", "dsa", "cn"], p=([0.6, 0.25, 0.1, 0.05] if stage < 3 else [0.85, 0.0, 0.1, 0.05]))
    k = int(rng.choice([3, 5, 7], p=[0.5, 0.35, 0.15]))
    opts = [str(kind), f"r{repeats}", f"k{k if kind != 'cn' else 3}", f"s{stride}"]
    if kind == "ir":
        opts.append(f"e{rng.choice(['1', '2', '2.5', '3', '4', '4.5', '6', '8'])}")
    elif kind == "er":
        opts.append(f"e{rng.choice(['2', '4', '6', '8'])}")
    opts.append(f"c{chs}")
    if kind in ("ir", "er", "ds") and rng.random() < 0.4:
        opts.append("se0.25")
    if kind != "cn" and rng.random() < 0.25:
        opts.append(ACT_OPTIONS[str(rng.choice([a for a in ACT_OPTIONS if a != act]))])
    return "_".join(opts)


def random_network_def(rng: np.random.Generator, num_classes: int = 1000) -> NetworkDef:
    """One random MobileNet-family network (see the module); the same generator state gives the same network."""
    family = str(rng.choice(list(FAMILY_ACTS)))
    act = str(rng.choice(FAMILY_ACTS[family]))
    width = float(rng.uniform(0.25, 1.75))
    stages = int(rng.integers(5, len(BASE_CHANNELS) + 1))
    keep = sorted(rng.choice(np.arange(1, len(BASE_CHANNELS)), stages - 1, replace=False))
    arch_def = []
    for i, s in enumerate([0, *keep]):
        chs = make_divisible(BASE_CHANNELS[s] * width)
        depth = 1 if i == 0 else int(rng.integers(1, 5))
        stride = STRIDES[s] if i else 1
        blocks = [_block(rng, s, 1, stride, chs, act)]
        if depth > 1:   # the stage's other blocks: one more definition, repeated
            blocks.append(_block(rng, s, depth - 1, 1, chs, act))
        arch_def.append(tuple(blocks))
    head = int(rng.choice([0, 960, 1024, 1280])) if family == "efficientnet" else int(rng.choice([960, 1024, 1280]))
    return NetworkDef(arch_def=tuple(arch_def), family=family, stem_size=make_divisible(rng.choice([16, 24, 32]) *
                                                                                       min(width, 1.0)),
                      num_features=head, act=act, resolution=int(rng.choice(RESOLUTIONS)), num_classes=num_classes)


PLAIN_WIDTHS = (1, 2, 4, 8, 16)   # stage widths of a plain stack, times its base width (64 in MobileNetV1)
PLAIN_STRIDES = (1, 2, 2, 2, 2)


def random_plain_def(rng: np.random.Generator, num_classes: int = 1000) -> NetworkDef:
    """One random plain stack of depthwise-separable blocks (`dsa`: depthwise conv, then pointwise conv, no skip)
    doubling its width at every stride, as in MobileNetV1 and LCNet: up to 1,536 channels at the last stage.

    `random_network_def` draws MobileNetV2/V3-like widths (at most 560 channels) and `dsa` stages only now and
    then, so a predictor trained on it met MobileNetV1's 1,024-channel `dsa` blocks nowhere and priced them
    high (README, "Measured design decisions"). A separate generator, so that `random_defs("random", ...)` keeps
    drawing the networks the shipped profiles timed."""
    family = str(rng.choice(list(FAMILY_ACTS)))
    act = str(rng.choice(FAMILY_ACTS[family] + ("relu6",) if family == "mobilenetv3" else FAMILY_ACTS[family]))
    base = float(rng.choice([32, 64])) * float(rng.uniform(0.35, 1.5))
    se_from = int(rng.integers(3, 6))   # stages from this one on may get squeeze-excite (LCNet: the last)
    arch_def = []
    for s, (mult, stride) in enumerate(zip(PLAIN_WIDTHS, PLAIN_STRIDES)):
        chs = make_divisible(base * mult)
        depth = int(rng.integers(1, 7 if s == 3 else 3))
        blocks = []
        for i, repeats in enumerate([1, depth - 1] if depth > 1 else [1]):
            k = int(rng.choice([3, 5], p=[0.8, 0.2] if s < 3 else [0.4, 0.6]))
            opts = ["dsa", f"r{repeats}", f"k{k}", f"s{stride if i == 0 else 1}", f"c{chs}"]
            if s >= se_from and rng.random() < 0.5:
                opts.append("se0.25")
            blocks.append("_".join(opts))
        arch_def.append(tuple(blocks))
    head = int(rng.choice([0, 1024, 1280])) if family == "efficientnet" else int(rng.choice([1024, 1280]))
    return NetworkDef(arch_def=tuple(arch_def), family=family, stem_size=make_divisible(base / 2),
                      num_features=head, act=act, resolution=int(rng.choice(RESOLUTIONS)), num_classes=num_classes)


MIXED_KERNELS = ((3,), (3, 5), (3, 5, 7), (3, 5, 7, 9), (3, 5, 7, 9, 11))   # MixNet's depthwise kernel mixes
MIXNET_STAGES = ((24, 2), (40, 2), (80, 2), (120, 1), (200, 2))   # (width at 1.0x, stride)
UIR_KINDS = ((3, 3), (3, 5), (5, 5), (0, 3), (0, 5), (3, 0), (5, 0), (0, 0))   # (start, middle) depthwise kernels
MNV4_STAGES = {"dense": ((96, 2), (128, 2)), "fused": ((80, 2), (160, 2), (256, 2))}   # after either start


def _mixnet_block(rng: np.random.Generator, repeats: int, stride: int, chs: int, deep: bool) -> str:
    """A MixNet `ir` block: depthwise kernels mixed over channel splits, 1x1 convs maybe split in two."""
    kernels = MIXED_KERNELS[int(rng.integers(0, len(MIXED_KERNELS)))]
    opts = ["ir", f"r{repeats}", "k" + ".".join(map(str, kernels))]
    opts += [f for f in ("a1.1", "p1.1") if rng.random() < 0.5]
    opts += [f"s{stride}", f"e{rng.choice(['3', '6'])}", f"c{chs}"]
    if deep:
        opts += [f"se{rng.choice(['0.25', '0.5'])}", "nsw"]
    return "_".join(opts)


def _mixnet_def(rng: np.random.Generator, width: float, num_classes: int) -> NetworkDef:
    arch_def = [(f"ds_r1_k3_s1_c{make_divisible(16 * width)}",)]
    for s, (base, stride) in enumerate(MIXNET_STAGES):
        chs, depth = make_divisible(base * width), int(rng.integers(1, 5))
        blocks = [_mixnet_block(rng, 1, stride, chs, s >= 1)]
        if depth > 1:
            blocks.append(_mixnet_block(rng, depth - 1, 1, chs, s >= 1))
        arch_def.append(tuple(blocks))
    return NetworkDef(arch_def=tuple(arch_def), family="efficientnet", stem_size=make_divisible(16 * width),
                      num_features=int(rng.choice([1280, 1536])), act="relu", resolution=int(rng.choice(RESOLUTIONS)),
                      num_classes=num_classes)


def _uir_block(rng: np.random.Generator, repeats: int, stride: int, chs: int) -> str:
    """A MobileNetV4 `uir` block: ExtraDW, inverted bottleneck, ConvNeXt-like or FFN (a strided one always has a
    depthwise conv)."""
    kinds = [k for k in UIR_KINDS if stride == 1 or k != (0, 0)]
    start, mid = kinds[int(rng.integers(0, len(kinds)))]
    return f"uir_r{repeats}_a{start}_k{mid}_s{stride}_e{rng.choice(['2', '3', '4', '6'])}_c{chs}"


def _mnv4_def(rng: np.random.Generator, width: float, num_classes: int) -> NetworkDef:
    stem = make_divisible(32 * width)
    start = "dense" if rng.random() < 0.5 else "fused"   # MobileNetV4-conv-small's start, or medium/large's
    if start == "dense":   # strides 2 x 2 x 2, then two strided uir stages: 32 in all, as timm builds without dilating
        arch_def = [(f"cn_r1_k3_s2_c{stem}", f"cn_r1_k1_s1_c{stem}"),
                    (f"cn_r1_k3_s2_c{make_divisible(96 * width)}", f"cn_r1_k1_s1_c{make_divisible(64 * width)}")]
    else:
        arch_def = [(f"er_r1_k3_s2_e4_c{make_divisible(48 * width)}",)]
    for base, stride in MNV4_STAGES[start]:
        chs, depth = make_divisible(base * width), int(rng.integers(1, 6))
        blocks = [_uir_block(rng, 1, stride, chs)]
        blocks += [_uir_block(rng, 1, 1, chs) for _ in range(depth - 1)]
        arch_def.append(tuple(blocks))
    arch_def.append((f"cn_r1_k1_s1_c{make_divisible(960 * width)}",))
    return NetworkDef(arch_def=tuple(arch_def), family="mobilenetv3", stem_size=stem, num_features=1280, act="relu",
                      resolution=int(rng.choice(RESOLUTIONS)), num_classes=num_classes, head_norm=True,
                      layer_scale=bool(rng.random() < 0.3))


def random_mixed_def(rng: np.random.Generator, num_classes: int = 1000) -> NetworkDef:
    """One random network of the block kinds the other generators never draw: MixNet-like (`ir` blocks whose
    depthwise kernels are mixed over channel splits, 3 to 11, and whose 1x1 convs may be split in two) or
    MobileNetV4-conv-like (`uir` blocks of every kind: extra depthwise, inverted bottleneck, ConvNeXt-like, FFN;
    a dense or fused start, a normalised head, sometimes a layer scale). Width 0.35-1.5x, resolutions 96-288.

    A predictor that never met these priced MixNets at a half to two thirds and MobileNetV4s at two thirds to
    four fifths of their time (`bench/timm_models.py`'s `fresh` cases, on the CPU and on the H200): a mixed
    depthwise conv is several small kernels and a concatenation, not one conv of the largest kernel."""
    width = float(rng.uniform(0.35, 1.5))
    return _mixnet_def(rng, width, num_classes) if rng.random() < 0.5 else _mnv4_def(rng, width, num_classes)


def random_same_pad_def(rng: np.random.Generator, num_classes: int = 1000) -> NetworkDef:
    """A random network of `random_network_def` (two draws in three) or `random_mixed_def`, with TensorFlow 'same'
    padding (timm's `pad_type="same"`, as in its tf_ ports: tf_mobilenetv3, tf_efficientnet, tf_mixnet, ...).

    Each strided conv then pads its input in a separate operation, which costs time on a GPU (onnxruntime folds
    the pad into the conv and costs both alike); without such networks a profile prices every tf_ model as its
    symmetric-padded twin."""
    draw = random_network_def if rng.random() < 2 / 3 else random_mixed_def
    return dataclasses.replace(draw(rng, num_classes), pad_type="same")


@dataclass(frozen=True)
class Generator:
    """A kind of random network: how to draw one, and what the draws are (for a profile's manifest)."""

    draw: Callable[[np.random.Generator, int], NetworkDef]
    description: str


# The kinds `python -m hardware_profiles.measure` times (`--random-networks`, `--plain-networks`, ...): the key is
# the prefix of their extra-table names, `KIND:SEED:I`.
GENERATORS = {
    "random": Generator(random_network_def, "random block definitions (random_network_def)"),
    "plain": Generator(random_plain_def, "random plain depthwise-separable stacks (random_plain_def)"),
    "mixed": Generator(random_mixed_def, "random MixNet/MobileNetV4-like networks (random_mixed_def)"),
    "same": Generator(random_same_pad_def, "random networks with TensorFlow 'same' padding (random_same_pad_def)"),
}


def random_defs(kind: str, n: int, seed: int, num_classes: int = 1000) -> list[NetworkDef]:
    """`n` random networks of kind `kind` (a `GENERATORS` key), the same list for the same seed (so a resumed
    measurement continues it)."""
    rng = np.random.default_rng(seed)
    return [GENERATORS[kind].draw(rng, num_classes) for _ in range(n)]
