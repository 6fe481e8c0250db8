"""Plain-torch layers several spaces share (FBNet, NAS-Bench-201, NAS-Bench-Macro, MuffNet): conv-BN-ReLU,
ShuffleNet's channel shuffle, FBNet's ConvBlock, the ShuffleNetV2 unit (with a kxk depthwise kernel and grouped
1x1 convs, as MuffNet uses it), the ``add`` layer timed alone, and the output size of their convolutions.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def conv_out(hw: int, kernel: int, stride: int) -> int:
    """Output size of a convolution with padding kernel // 2."""
    return (hw + 2 * (kernel // 2) - kernel) // stride + 1


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    """Conv (padding kernel // 2, no bias), BatchNorm and, if `relu`, ReLU, as a list to splice into a Sequential."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU()] * relu


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: (N, g*c, H, W) -> view (N, g, c, H, W) -> transpose -> (N, c*g, H, W)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def kept_channels(mid: int, keep: float) -> int:
    """Channels a structured pruning to `keep` of `mid` expansion channels leaves: a multiple of 8 (what SIMD and
    accelerator lanes like) nearest ``keep * mid``, at least 8, at most `mid`; `mid` itself when it is 8 or less.
    Costs and modules both count channels with this, so a pruned layer's key and its module agree."""
    if keep >= 1 or mid <= 8:
        return mid
    return min(mid, max(8, 8 * round(keep * mid / 8)))


class ConvBlock(nn.Module):
    """FBNet ConvBlock (k, e, g): grouped 1x1 expand, shuffle, kxk depthwise, grouped 1x1 project, residual.

    The expansion may be fractional (a pruned block, `prune_expansion`): the block has ``round(cin * expansion)``
    middle channels.
    """

    def __init__(self, cin: int, cout: int, kernel: int, expansion: float, groups: int, stride: int):
        super().__init__()
        mid = round(cin * expansion)
        shuffle = [ChannelShuffle(groups)] if groups > 1 else []
        self.body = nn.Sequential(*conv_bn(cin, mid, 1, groups=groups), *shuffle,
                                  *conv_bn(mid, mid, kernel, stride, groups=mid),
                                  *conv_bn(mid, cout, 1, groups=groups, relu=False))
        self.residual = cin == cout and stride == 1
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y + x if self.residual else y


def expansion_parts(module: nn.Module) -> tuple | None:
    """(expansion conv, its BatchNorm, depthwise conv, its BatchNorm, squeeze-excite or None, projection conv) of
    an inverted residual whose expansion channels structured pruning can narrow: a `ConvBlock` with ungrouped 1x1
    convolutions (a channel shuffle between grouped ones would need its groups pruned alike), or timm's
    ``InvertedResidual`` with plain convolutions (not MixNet's mixed ones); None for any other module."""
    if isinstance(module, ConvBlock):
        body = module.body
        return (body[0], body[1], body[3], body[4], None, body[6]) if module.groups == 1 else None
    names = ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl")
    if not all(hasattr(module, n) for n in names):
        return None
    pw, bn1, dw, bn2, pwl = (getattr(module, n) for n in names)
    se = getattr(module, "se", None)
    se = se if hasattr(se, "conv_reduce") and hasattr(se, "conv_expand") else None
    plain = all(isinstance(c, nn.Conv2d) for c in (pw, dw, pwl)) and pw.groups == pwl.groups == 1 and \
        dw.groups == dw.in_channels == dw.out_channels and all(isinstance(b, nn.BatchNorm2d) for b in (bn1, bn2))
    return (pw, bn1, dw, bn2, se, pwl) if plain else None


@torch.no_grad()
def prune_expansion(module: nn.Module, keep: float) -> None:
    """Structured pruning in place of an inverted residual (`expansion_parts`): keep `kept_channels(mid, keep)` of
    its expansion channels, those that carry the most into the output (the depthwise BatchNorm's |scale| times the
    L1 norm of the channel's projection weights: the network-slimming criterion with the projection's fan-out),
    in their original order. The expansion conv and its BatchNorm keep those output channels, the depthwise conv
    and its BatchNorm those channels, squeeze-excite those inputs and gates, the projection those inputs; the
    block then computes exactly what the kept channels contributed before.

    Raises:
        ValueError: `module` is not an inverted residual that can be pruned.
    """
    parts = expansion_parts(module)
    if parts is None:
        raise ValueError(f"cannot prune the expansion of a {type(module).__name__}")
    expand, bn1, dw, bn2, se, project = parts
    mid = expand.out_channels
    kept = kept_channels(mid, keep)
    if kept == mid:
        return
    weight = bn2.weight.abs() * project.weight.abs().sum(dim=(0, 2, 3))
    index = torch.sort(torch.topk(weight, kept, sorted=False).indices).values
    _keep_channels(expand, out=index)
    _keep_channels(dw, out=index)   # depthwise: each kept channel keeps its own one-channel filter
    dw.in_channels = dw.groups = kept
    _keep_channels(project, inp=index)
    if se is not None:
        _keep_channels(se.conv_reduce, inp=index)
        _keep_channels(se.conv_expand, out=index)
    for bn in (bn1, bn2):
        bn.weight, bn.bias = nn.Parameter(bn.weight[index].clone()), nn.Parameter(bn.bias[index].clone())
        bn.running_mean, bn.running_var = bn.running_mean[index].clone(), bn.running_var[index].clone()
        bn.num_features = kept


def _keep_channels(conv: nn.Conv2d, out: torch.Tensor | None = None, inp: torch.Tensor | None = None) -> None:
    """`conv` narrowed in place to the output channels `out` and input channels `inp` (None: all)."""
    weight = conv.weight if out is None else conv.weight[out]
    conv.weight = nn.Parameter((weight if inp is None else weight[:, inp]).clone())
    if out is not None:
        conv.out_channels = len(out)
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias[out].clone())
    if inp is not None:
        conv.in_channels = len(inp) * conv.groups


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit with a kxk depthwise kernel and g-group 1x1 convs (see `search_spaces.muffnet`).

    Args:
        cin: input channels (== `cout` for the basic unit).
        cout: output channels (even; each half a multiple of `groups`).
        kernel: depthwise kernel.
        groups: groups of the 1x1 convs (those reading `cin` in a down-sampling unit use gcd(groups, cin)).
        stride: 2 = the down-sampling unit, 1 = the basic unit.
    """

    def __init__(self, cin: int, cout: int, kernel: int, groups: int, stride: int):
        super().__init__()
        half = cout // 2
        if cout % 2 or half % groups or stride not in (1, 2) or (stride == 1 and cin != cout):
            raise ValueError(f"no ShuffleNetV2 unit {cin} -> {cout} channels, stride {stride}, groups {groups}")
        g_in = math.gcd(groups, cin) if stride == 2 else groups
        self.branch1 = None
        if stride == 2:
            self.branch1 = nn.Sequential(*conv_bn(cin, cin, kernel, stride, groups=cin, relu=False),
                                         *conv_bn(cin, half, 1, groups=g_in))
        self.shuffle = ChannelShuffle(2)
        shuffle = [ChannelShuffle(g_in)] if g_in > 1 else []
        self.branch2 = nn.Sequential(*conv_bn(cin if stride == 2 else half, half, 1, groups=g_in), *shuffle,
                                     *conv_bn(half, half, kernel, stride, groups=half, relu=False),
                                     *conv_bn(half, half, 1, groups=groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            return self.shuffle(torch.cat((x1, self.branch2(x2)), dim=1))
        return self.shuffle(torch.cat((self.branch1(x), self.branch2(x)), dim=1))


class AddStored(nn.Module):
    """The ``add`` layer alone: the input plus a stored tensor of the same shape (one read of each operand and one
    write, as a join's add; at a batch above 1 the stored operand is broadcast)."""

    def __init__(self, shape: tuple[int, int, int]):
        super().__init__()
        self.register_buffer("other", torch.randn(1, *shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.other
