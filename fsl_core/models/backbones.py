"""Conv-4 and ResNet-12 feature extractors returning the penultimate and the last feature map.

Both are the few-shot backbones of FRN (Wertheimer, Tang & Hariharan, CVPR 2021), BiFRN and HMDRN:

- Conv-4 (Conv-64F): Oriol Vinyals, Charles Blundell, Timothy Lillicrap, Koray Kavukcuoglu, Daan Wierstra,
  "Matching Networks for One Shot Learning", NeurIPS 2016, arXiv:1606.04080; the same four blocks embed
  images in Jake Snell, Kevin Swersky, Richard Zemel, "Prototypical Networks for Few-shot Learning",
  NeurIPS 2017, arXiv:1703.05175.
- ResNet-12: introduced for few-shot learning by Boris N. Oreshkin, Pau Rodríguez López, Alexandre Lacoste,
  "TADAM: Task dependent adaptive metric for improved few-shot learning", NeurIPS 2018, arXiv:1805.10123;
  the widths 64/160/320/640 used here (and by FRN's release) are those of Kwonjoon Lee, Subhransu Maji,
  Avinash Ravichandran, Stefano Soatto, "Meta-Learning with Differentiable Convex Optimization" (MetaOptNet),
  CVPR 2019, arXiv:1904.03758.

Shapes at 84×84 input: Conv-4 → mid (B, 64, 10, 10), high (B, 64, 5, 5);
ResNet-12 → mid (B, 320, 10, 10), high (B, 640, 5, 5).

Every block ends in an activation followed by a 2×2 max-pool; both backbones pool first and apply the
activation to the pooled map, a quarter of the size. The two orders give the same bits, forward and backward.
ReLU and LeakyReLU never decrease, so the largest of four activations is the activation of the largest input.
The gradient reaches the window's first largest position times the activation's slope there; the two orders
pick different positions only in a window that ReLU maps to zeros, where the slope and so the gradient are 0
in both. Pooling first spares the activation's pass over the full-size map and, in the backward
pass, its gradient: Conv-4's training step (forward and backward) took 1.12× less time at 5-way 5-shot 15-query
and 1.28× less at 30-way, ResNet-12's 1.01–1.02× (within noise: one of its three activations per stage), on
two Xeon cores of family 6, model 207 (``bench/backbone_speed.py``).
"""

from __future__ import annotations

import copy

from torch import Tensor, nn


class Conv4(nn.Module):
    """Four blocks Conv3×3 (padding 1, with bias) → BatchNorm → ReLU → MaxPool2 (Vinyals et al., NeurIPS 2016;
    Snell et al., NeurIPS 2017; see the module docstring), each computed as Conv → BatchNorm → MaxPool2 → ReLU,
    which gives the same bits (module docstring).

    images (B, 3, H, W) → mid (B, C, H/8, W/8) after three blocks, high (B, C, H/16, W/16) after four.
    113,088 trainable parameters with 64 channels.
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        widths = [3, channels, channels, channels, channels]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=True),
                nn.BatchNorm2d(c_out),
                nn.MaxPool2d(2),
                nn.ReLU(inplace=True),
            )
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.channels = (channels, channels)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images: (B, 3, H, W) → (mid (B, C, H/8, W/8), high (B, C, H/16, W/16))."""
        x = images
        for block in self.blocks[:3]:
            x = block(x)
        return x, self.blocks[3](x)


class ResidualStage(nn.Module):
    """ResNet-12 stage: 3×(Conv3×3 → BN) with LeakyReLU(0.1) after the first two, a 1×1 conv+BN shortcut,
    addition, LeakyReLU(0.1) and MaxPool2, the last two computed as MaxPool2 → LeakyReLU(0.1), which gives the
    same bits (module docstring)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()

        def conv_bn(a: int, b: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(a, b, k, padding=k // 2, bias=False), nn.BatchNorm2d(b))

        self.conv1 = conv_bn(c_in, c_out, 3)
        self.conv2 = conv_bn(c_out, c_out, 3)
        self.conv3 = conv_bn(c_out, c_out, 3)
        self.shortcut = conv_bn(c_in, c_out, 1)
        # in place: each activation overwrites a tensor that nothing else reads (a BatchNorm's output, the
        # pooled sum), which spares a new map per call (ResNet-12's step 1.09× faster, the same bits)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.pool = nn.MaxPool2d(2)

    pool_first = True
    """Pool before the last activation (``in_papers_order`` sets it False on a copy)."""

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, c_in, H, W) → (B, c_out, H/2, W/2)."""
        out = self.act(self.conv1(x))
        out = self.act(self.conv2(out))
        out = self.conv3(out) + self.shortcut(x)
        return self.act(self.pool(out)) if self.pool_first else self.pool(self.act(out))


class ResNet12(nn.Module):
    """ResNet-12 (Oreshkin et al., NeurIPS 2018) with the widths 64/160/320/640 of Lee et al. (CVPR 2019), as
    used by FRN, BiFRN and HMDRN (see the module docstring), without DropBlock.

    Four ``ResidualStage``s; images (B, 3, H, W) → mid (B, 320, H/8, W/8) after three stages, high
    (B, 640, H/16, W/16) after four. 12,424,320 trainable parameters.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (64, 160, 320, 640)) -> None:
        super().__init__()
        ins = (3, *widths[:-1])
        self.stages = nn.ModuleList(ResidualStage(a, b) for a, b in zip(ins, widths))
        self.channels = (widths[2], widths[3])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images: (B, 3, H, W) → (mid (B, 320, H/8, W/8), high (B, 640, H/16, W/16))."""
        x = images
        for stage in self.stages[:3]:
            x = stage(x)
        return x, self.stages[3](x)


BACKBONES = {"conv4": Conv4, "resnet12": ResNet12}


def build_backbone(name: str) -> nn.Module:
    """The backbone called ``name`` (``conv4`` or ``resnet12``); ``.channels`` = (C_mid, C_high)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    return BACKBONES[name]()


def in_papers_order(backbone: Conv4 | ResNet12) -> nn.Module:
    """A copy of ``backbone`` that applies each block's last activation before its max-pool, as the papers
    write it: the same bits, more time (for tests and ``bench/backbone_speed.py``)."""
    papers = copy.deepcopy(backbone)
    if isinstance(papers, Conv4):
        for block in papers.blocks:
            block[2], block[3] = block[3], block[2]  # Conv → BN → ReLU → MaxPool
    else:
        for stage in papers.stages:
            stage.pool_first = False
    return papers


def count_trainable(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "Conv4",
    "ResNet12",
    "ResidualStage",
    "build_backbone",
    "count_trainable",
    "in_papers_order",
    "BACKBONES",
]
