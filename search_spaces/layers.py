"""Plain-torch layers several spaces share (FBNet, NAS-Bench-201, NAS-Bench-Macro, MuffNet): conv-BN-ReLU,
ShuffleNet's channel shuffle, FBNet's ConvBlock, and the output size of their convolutions.
"""
from __future__ import annotations

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


class ConvBlock(nn.Module):
    """FBNet ConvBlock (k, e, g): grouped 1x1 expand, shuffle, kxk depthwise, grouped 1x1 project, residual."""

    def __init__(self, cin: int, cout: int, kernel: int, expansion: int, groups: int, stride: int):
        super().__init__()
        mid = cin * expansion
        shuffle = [ChannelShuffle(groups)] if groups > 1 else []
        self.body = nn.Sequential(*conv_bn(cin, mid, 1, groups=groups), *shuffle,
                                  *conv_bn(mid, mid, kernel, stride, groups=mid),
                                  *conv_bn(mid, cout, 1, groups=groups, relu=False))
        self.residual = cin == cout and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y + x if self.residual else y
