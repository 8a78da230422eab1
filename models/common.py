"""Building blocks of the YOLOv5 v6 architecture: Conv, Bottleneck, C3, SPPF, Concat, Classify.

Attribute names (conv, bn, act, cv1, cv2, cv3, m) are part of the checkpoint format:
state-dict keys are built from them, so they must stay stable.
"""
from __future__ import annotations

import torch
from torch import nn

from utils.torch_utils import fuse_conv_and_bn

# One stateless SiLU shared by every Conv: it keeps the module count (the "layers" figure of
# the model summary) equal to YOLOv5's and costs nothing, since SiLU holds no parameters.
SHARED_SILU = nn.SiLU()


def autopad(k: int | list[int], p: int | list[int] | None = None, d: int = 1) -> int | list[int]:
    """Padding that keeps the spatial size ('same') for stride 1, given kernel k and dilation d."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (size - 1) + 1 for size in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [size // 2 for size in k]
    return p


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU; the basic unit of every YOLOv5 layer."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        d: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        if act is True:
            self.act = SHARED_SILU
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Forward once the BatchNorm has been folded into `conv` (see `fuse_bn`)."""
        return self.act(self.conv(x))

    def fuse_bn(self) -> None:
        """Fold BatchNorm into the convolution for faster inference; the BN module is removed."""
        if not hasattr(self, "bn"):
            return
        self.conv = fuse_conv_and_bn(self.conv, self.bn)
        del self.bn
        self.forward = self.forward_fused  # type: ignore[method-assign]


class Bottleneck(nn.Module):
    """1x1 conv to c2*e then 3x3 conv, with a residual add when shapes allow it."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block: a Bottleneck stack on one half of the channels, a plain 1x1 on the other, merged."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPPF(nn.Module):
    """Fast spatial pyramid pooling: three chained max-pools stand in for pools of size k, 2k-1, 3k-2."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        pooled1 = self.m(x)
        pooled2 = self.m(pooled1)
        pooled3 = self.m(pooled2)
        return self.cv2(torch.cat((x, pooled1, pooled2, pooled3), dim=1))


class Concat(nn.Module):
    """Concatenate a list of tensors along one dimension (channels by default)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, dim=self.d)


class Classify(nn.Module):
    """Image-level classification head: global average pool -> Dropout -> Linear, giving logits [B, c2].

    Deliberately compact (no wide 1x1 conv before pooling), so a classifier built on a small backbone
    stays small; the pooled vector has the backbone's c1 channels.
    """

    def __init__(self, c1: int, c2: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=float(dropout))
        self.linear = nn.Linear(c1, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.pool(x).flatten(1)))
