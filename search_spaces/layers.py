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

    @property
    def prunable(self) -> bool:
        """Whether `prune_expansion` can narrow the block: ungrouped 1x1 convolutions (a channel shuffle between
        grouped ones would need its groups pruned alike)."""
        return self.groups == 1

    @torch.no_grad()
    def prune_expansion(self, keep: float) -> None:
        """Structured pruning in place: keep `kept_channels(mid, keep)` of the middle channels, those that carry
        the most into the output (the depthwise BatchNorm's |scale| times the L1 norm of the channel's projection
        weights, the network-slimming criterion with the projection's fan-out), in their original order. The
        expansion conv and its BatchNorm lose those output channels, the depthwise conv and its BatchNorm those
        channels, the projection those inputs; the block computes exactly what the kept channels computed before."""
        if not self.prunable:
            raise ValueError("a ConvBlock with grouped 1x1 convolutions cannot be pruned")
        expand, bn1, relu1, dw, bn2, relu2, project, bn3 = self.body
        mid = expand.out_channels
        kept = kept_channels(mid, keep)
        if kept == mid:
            return
        weight = bn2.weight.abs() * project.weight.abs().sum(dim=(0, 2, 3))
        index = torch.sort(torch.topk(weight, kept, sorted=False).indices).values
        self.body = nn.Sequential(_conv_slice(expand, out=index), _bn_slice(bn1, index), relu1,
                                  _conv_slice(dw, out=index, groups=kept), _bn_slice(bn2, index), relu2,
                                  _conv_slice(project, inp=index), bn3).train(self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y + x if self.residual else y


def _conv_slice(conv: nn.Conv2d, out: torch.Tensor | None = None, inp: torch.Tensor | None = None,
                groups: int | None = None) -> nn.Conv2d:
    """A copy of `conv` with only the output channels `out` and input channels `inp` (None: all); a depthwise
    conv (`groups` = its new channel count) keeps its per-channel filters."""
    weight = conv.weight if out is None else conv.weight[out]
    if inp is not None:
        weight = weight[:, inp]
    groups = conv.groups if groups is None else groups
    cin = weight.shape[1] * groups
    new = nn.Conv2d(cin, weight.shape[0], conv.kernel_size, conv.stride, conv.padding, groups=groups,
                    bias=conv.bias is not None)
    new.weight.copy_(weight)
    if conv.bias is not None:
        new.bias.copy_(conv.bias if out is None else conv.bias[out])
    return new


def _bn_slice(bn: nn.BatchNorm2d, index: torch.Tensor) -> nn.BatchNorm2d:
    """A copy of `bn` over the channels `index` (scale, shift and running statistics)."""
    new = nn.BatchNorm2d(len(index), bn.eps, bn.momentum)
    new.weight.copy_(bn.weight[index])
    new.bias.copy_(bn.bias[index])
    new.running_mean.copy_(bn.running_mean[index])
    new.running_var.copy_(bn.running_var[index])
    new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


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
