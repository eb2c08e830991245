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

Two ways of computing the same function spare memory traffic (``in_papers_form`` builds the papers' literal
form; ``bench/backbone_speed.py`` times both):

- Conv-4 pools before its ReLU and activates the pooled map, a quarter of the size. ReLU never decreases, so
  the largest of four activations is the activation of the largest input; the gradient reaches a window's
  first largest position times ReLU's slope there, and the two orders pick different positions only in a
  window that ReLU maps to zeros, where that slope, and so the gradient, is 0 in both. Values and gradients are
  equal; only the sign of a zero can differ (a window whose largest input is −0.0). Conv-4's training step ran
  1.04–1.12× faster at 5-way 5-shot 15-query and 1.18–1.28× at 30-way, over three runs on two shared Xeon
  cores (family 6, model 207).
- ResNet-12 keeps the papers' order (LeakyReLU, then the pool): LeakyReLU(0.1) rounds some neighbouring
  negative inputs to the same output, often in bfloat16, and the pool would then pass the gradient to a
  different element. Its activations work in place instead, each on a tensor nothing else reads (a
  BatchNorm's output, the residual sum): the same bits, one new map fewer per call. ResNet-12's training step
  ran 1.27× faster at 5-way in one run there.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn


class Conv4(nn.Module):
    """Four blocks Conv3×3 (padding 1, with bias) → BatchNorm → ReLU → MaxPool2 (Vinyals et al., NeurIPS 2016;
    Snell et al., NeurIPS 2017; see the module docstring), each computed as Conv → BatchNorm → MaxPool2 → ReLU,
    which gives the same values and gradients (module docstring).

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
    addition, LeakyReLU(0.1) and MaxPool2; the activations in place (module docstring)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()

        def conv_bn(a: int, b: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(a, b, k, padding=k // 2, bias=False), nn.BatchNorm2d(b))

        self.conv1 = conv_bn(c_in, c_out, 3)
        self.conv2 = conv_bn(c_out, c_out, 3)
        self.conv3 = conv_bn(c_out, c_out, 3)
        self.shortcut = conv_bn(c_in, c_out, 1)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, c_in, H, W) → (B, c_out, H/2, W/2)."""
        out = self.act(self.conv1(x))
        out = self.act(self.conv2(out))
        out = self.conv3(out)
        return self.pool(self.act(out + self.shortcut(x)))


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


def in_papers_form(backbone: Conv4 | ResNet12) -> nn.Module:
    """A copy of ``backbone`` computed as the papers write it (for tests and ``bench/backbone_speed.py``):
    Conv-4's blocks Conv → BatchNorm → ReLU → MaxPool2, ResNet-12's LeakyReLUs each making a new tensor. It gives
    the same values and gradients in more time (module docstring)."""
    if not isinstance(backbone, (Conv4, ResNet12)):
        raise TypeError(f"in_papers_form takes a Conv4 or ResNet12 backbone, not {type(backbone).__name__}")
    papers = copy.deepcopy(backbone)
    if isinstance(papers, Conv4):
        for block in papers.blocks:
            block[2], block[3] = nn.ReLU(inplace=True), nn.MaxPool2d(2)
    else:
        for stage in papers.stages:
            stage.act = nn.LeakyReLU(0.1)
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
    "in_papers_form",
    "BACKBONES",
]
