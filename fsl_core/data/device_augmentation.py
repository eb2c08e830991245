"""The training augmentation applied on the training device, a whole episode at a time.

On the DataLoader's path each worker process decodes or copies an image, augments it with PIL and sends a
float tensor to the training process: a 30-way episode of 600 images is about 600 PIL pipelines and 51 MB
of tensors per step, which the workers of a fast GPU may not keep up with. With ``augment_on_device`` the
training images are decoded once and kept in the device's memory, and the work is split in two:

- the loader's workers only draw each image's *plan* (``PLAN_FIELDS``: crop box, size after resizing,
  crop window, flip, colour-jitter order and factors) by calling the torchvision transforms' own parameter
  draws, in the same order, from the same per-image seeds: every image gets the crop, jitter and flip it
  gets on the loader's path;
- ``DeviceAugmentation`` turns an episode of plans into images in a few batched tensor operations that
  compute what Pillow computes, in its integer arithmetic: its antialiased bilinear resampling (weights
  rounded to 22 bits, two passes rounded to 8 bits each, in the order Pillow takes, ``vertical_pass_first``)
  as batched matrix products split so that float32 sums stay exact; the flip as a reversal of the
  horizontal weights; brightness, contrast and saturation as ``ImageEnhance`` computes them (``Image.blend``
  in float32 truncated to an integer, the contrast's grey mean rounded to an integer, grey as ITU-R 601-2
  luma in 16-bit fixed point); then ToTensor and Normalize.

So the images are the loader's, bit for bit, and a run trains the same with the setting on or off
(``tests/test_device_augmentation.py`` compares tensors and whole runs); only where the work is done changes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import PIL
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from fsl_core.progress import format_bytes

from .decoded import DecodedImages
from .images import FewShotDataError
from .sampler import Episode

PLAN_FIELDS: tuple[str, ...] = (
    "index",  # the image's index in the data set
    "top",  # crop box in the image, in pixels
    "left",
    "height",
    "width",
    "resized_height",  # size the crop is resized to
    "resized_width",
    "window_top",  # the output window in the resized crop (RandomCrop/CenterCrop after a Resize)
    "window_left",
    "flip",  # 1: flipped left-right
    "jitter_1",  # colour steps in the order they apply: 0 brightness, 1 contrast, 2 saturation, -1 none
    "jitter_2",
    "jitter_3",
    "brightness",  # the factors Pillow's ImageEnhance applies
    "contrast",
    "saturation",
)
"""What a plan holds, in order: one float64 row of ``len(PLAN_FIELDS)`` values per image."""

_FIELD = {name: position for position, name in enumerate(PLAN_FIELDS)}
_JITTER_STEPS = ("brightness", "contrast", "saturation")
PRECISION_BITS = 22
"""Pillow rounds its 8-bit resampling weights to multiples of 2⁻²²."""
CHUNK_PIXELS = 1 << 24
"""The most padded crop pixels resampled at once (a chunk of an episode): bounds the device memory a batch
of large crops takes (about 40 bytes per pixel at its peak, 0.7 GB)."""
PILLOW_VERTICAL_FIRST = int(PIL.__version__.split(".")[0]) >= 13
"""Whether the installed Pillow resamples some images vertically first (``vertical_pass_first``)."""
DEVICE_MEMORY_SHARE = 0.5
"""The largest share of the device's free memory that the training images may take there."""


class AugmentationPlanner:
    """Reads a training transform (a torchvision ``Compose`` of ``fsl_core.data.train_transform``) and draws
    the plan it would apply to an image, from torch's global generator, exactly as the transform's steps
    draw their parameters.

    Takes RandomResizedCrop, Resize (to [H, W]) and RandomCrop/CenterCrop (no padding), all bilinear, then
    ColorJitter (brightness, contrast, saturation; no hue) and RandomHorizontalFlip, then ToTensor and
    Normalize: the steps of every preset of ``AUGMENTATIONS``.

    Raises:
        ValueError: a step it does not take, or steps in an order it cannot follow; the message names the
            step and the way out (leave ``augment_on_device`` off: the loader applies any transform).
    """

    def __init__(self, transform: Any) -> None:
        self.transform = transform
        steps = list(transform.transforms) if isinstance(transform, T.Compose) else [transform]
        self.steps: list[Any] = []
        self.mean = self.std = None
        size: tuple[int, int] | None = None  # of the images the steps so far give (None: each image's own)
        resized = geometry_done = jittered = False
        for step in steps:
            kind = type(step).__name__
            if isinstance(step, (T.RandomResizedCrop, T.Resize, T.RandomCrop, T.CenterCrop)):
                if geometry_done:
                    raise self._refuse(step, "a crop or resize after the colour jitter, the flip or ToTensor")
                if getattr(step, "interpolation", InterpolationMode.BILINEAR) != InterpolationMode.BILINEAR:
                    raise self._refuse(step, "an interpolation other than bilinear")
                if isinstance(step, T.RandomCrop) and (step.padding is not None or step.pad_if_needed):
                    raise self._refuse(step, "padding")
                if isinstance(step, T.Resize) and not (
                    isinstance(step.size, Sequence) and len(step.size) == 2
                ):
                    raise self._refuse(step, "a size other than [height, width]")
                if isinstance(step, (T.RandomResizedCrop, T.Resize)):
                    if resized:
                        raise self._refuse(step, "a second resize")
                    resized = True
                size = (int(step.size[0]), int(step.size[1]))
                self.steps.append(step)
            elif isinstance(step, T.ColorJitter):
                if step.hue is not None:
                    raise self._refuse(step, "a hue jitter")
                if jittered:
                    raise self._refuse(step, "a second colour jitter")
                geometry_done = jittered = True
                self.steps.append(step)
            elif isinstance(step, T.RandomHorizontalFlip):
                geometry_done = True
                self.steps.append(step)
            elif isinstance(step, T.ToTensor):
                geometry_done = True
            elif isinstance(step, T.Normalize) and self.mean is None:
                self.mean, self.std = tuple(step.mean), tuple(step.std)
            else:
                raise self._refuse(step, f"the step {kind}")
        if self.mean is None:
            raise ValueError(
                "augment_on_device takes a training transform that ends with ToTensor and Normalize (the "
                "presets of fsl_core.data.AUGMENTATIONS); leave augment_on_device off to apply this one in "
                "the loader"
            )
        if size is None:
            raise ValueError(
                "augment_on_device makes an episode's images together, so they must share one size, and this "
                "transform has no step that resizes or crops them; leave augment_on_device off"
            )
        self.image_size: tuple[int, int] = size
        """(height, width) of the images the transform gives."""

    @staticmethod
    def _refuse(step: Any, what: str) -> ValueError:
        return ValueError(
            f"augment_on_device cannot apply {step!r}: it does not take {what}. It applies the presets of "
            "fsl_core.data.AUGMENTATIONS; leave augment_on_device off to apply any other transform in the "
            "loader's workers"
        )

    def draw(self, index: int, height: int, width: int) -> Tensor:
        """The plan (``PLAN_FIELDS``, float64) of image ``index`` of ``height`` × ``width`` pixels, drawing
        from torch's global generator what the transform's steps would draw for it."""
        plan = torch.zeros(len(PLAN_FIELDS), dtype=torch.float64)
        top, left, crop_height, crop_width = 0, 0, height, width
        resized: tuple[int, int] | None = None
        window_top = window_left = 0
        size = (height, width)  # of the image each step receives
        jitter: list[int] = []
        factors = {name: 1.0 for name in _JITTER_STEPS}
        flip = False
        for step in self.steps:
            if isinstance(step, T.Resize):
                resized = size = (int(step.size[0]), int(step.size[1]))
                continue
            if isinstance(step, T.RandomResizedCrop):
                i, j, h, w = T.RandomResizedCrop.get_params(_shaped(size), step.scale, step.ratio)
                top, left, crop_height, crop_width = top + i, left + j, h, w
                resized = size = (int(step.size[0]), int(step.size[1]))
                continue
            if isinstance(step, (T.RandomCrop, T.CenterCrop)):
                h, w = int(step.size[0]), int(step.size[1])
                if h > size[0] or w > size[1]:
                    raise FewShotDataError(
                        f"{step!r} cannot crop {h}×{w} pixels out of image {index} of {size[0]}×{size[1]} "
                        "(the loader's path refuses it too); give the transform a crop that fits, or a resize "
                        "before it"
                    )
                if isinstance(step, T.RandomCrop):
                    i, j, h, w = T.RandomCrop.get_params(_shaped(size), (h, w))
                else:  # torchvision's centre: rounded half of the margin
                    i, j = int(round((size[0] - h) / 2.0)), int(round((size[1] - w) / 2.0))
                if resized is None:
                    top, left, crop_height, crop_width = top + i, left + j, h, w
                else:
                    window_top, window_left = window_top + i, window_left + j
                size = (h, w)
                continue
            if isinstance(step, T.ColorJitter):
                order, brightness, contrast, saturation, _ = T.ColorJitter.get_params(
                    step.brightness, step.contrast, step.saturation, step.hue
                )
                drawn = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
                for position in order.tolist():
                    if position < 3 and drawn[_JITTER_STEPS[position]] is not None:
                        jitter.append(position)
                        factors[_JITTER_STEPS[position]] = float(drawn[_JITTER_STEPS[position]])
                continue
            if isinstance(step, T.RandomHorizontalFlip):
                flip = flip != bool(torch.rand(1) < step.p)
        if resized is None:
            resized = (crop_height, crop_width)
        values = {
            "index": index,
            "top": top,
            "left": left,
            "height": crop_height,
            "width": crop_width,
            "resized_height": resized[0],
            "resized_width": resized[1],
            "window_top": window_top,
            "window_left": window_left,
            "flip": float(flip),
            "jitter_1": -1,
            "jitter_2": -1,
            "jitter_3": -1,
            **factors,
        }
        for position, kind in enumerate(jitter):
            values[f"jitter_{position + 1}"] = kind
        for name, value in values.items():
            plan[_FIELD[name]] = value
        return plan


def _shaped(size: tuple[int, int]) -> Tensor:
    """A tensor of shape (3, height, width) without memory, for torchvision's ``get_params``."""
    return torch.empty(()).expand(3, *size)


class PlannedImages(Dataset):
    """The training set seen by the loader's workers under ``augment_on_device``: item ``index`` is
    (plan of image ``index``: (len(PLAN_FIELDS),) float64, label), drawn by ``planner`` from the image's size
    in ``decoded`` (the workers never touch a pixel)."""

    def __init__(self, decoded: DecodedImages, labels: Sequence[int], planner: AugmentationPlanner) -> None:
        self.shapes = decoded.shapes
        self.labels = list(labels)
        self.planner = planner

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        height, width, _ = self.shapes[index]
        return self.planner.draw(index, height, width), self.labels[index]


class DeviceAugmentation:
    """The training images, decoded once, kept on ``device``, and augmented there from their plans.

    Args:
        decoded: the training images (``DecodedImages``); their pixels are copied to ``device`` once (on the
            CPU they are used where they are).
        planner: the ``AugmentationPlanner`` of the training transform (its Normalize statistics are used).
        device: the training device.
        check_pillow: first compare a few images with the installed Pillow's (``check_against_pillow``).

    Raises:
        FewShotDataError: the images would take more than ``DEVICE_MEMORY_SHARE`` of the device's free
            memory, or this machine's Pillow makes other pixels than the ones reproduced here
            (``check_against_pillow``); the message says why and the way out.
    """

    def __init__(
        self,
        decoded: DecodedImages,
        planner: AugmentationPlanner,
        device: torch.device | str,
        check_pillow: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.planner = planner
        """Draws the plans this augmentation takes (its transform's output size and statistics)."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if decoded.nbytes > DEVICE_MEMORY_SHARE * free:
                raise FewShotDataError(
                    f"augment_on_device keeps the {len(decoded):,} training images "
                    f"({format_bytes(decoded.nbytes)} of 8-bit pixels) in the memory of {self.device}, more "
                    f"than {DEVICE_MEMORY_SHARE:.0%} of its {format_bytes(free)} free; leave augment_on_device "
                    "off (the loader's workers then augment them), or free device memory"
                )
        self.copied_pixels = self.device.type != "cpu"
        """Whether the pixels were copied to the device (on the CPU ``decoded``'s buffer serves as it is)."""
        pixels = torch.from_numpy(decoded.buffer).view(-1, 3)
        self.pixels = pixels.to(self.device) if self.copied_pixels else pixels
        """(P, 3) uint8: every training image's pixels, row-major, one image after the other."""
        offsets = torch.as_tensor(np.asarray(decoded.offsets[:-1]) // 3, dtype=torch.int64)
        widths = torch.tensor([width for _, width, _ in decoded.shapes], dtype=torch.int64)
        self.first_pixel = offsets.to(self.device)
        self.widths = widths.to(self.device)
        # ToTensor and Normalize of every 8-bit level, computed once on the CPU as the loader computes them: a
        # lookup then gives the loader's values on any device (a GPU may divide by a constant as a product)
        levels = torch.arange(256, dtype=torch.float32).div(255).expand(3, 1, 256).clone()
        self.normalised = F.normalize(levels, list(planner.mean), list(planner.std)).view(-1).to(self.device)
        """(3·256,) float32: channel c's level v becomes ``normalised[256·c + v]``."""
        self.channel_offset = torch.arange(0, 3 * 256, 256, device=self.device, dtype=torch.int32)
        self.channel_offset = self.channel_offset.view(1, 3, 1, 1)
        if check_pillow:
            check_against_pillow(planner, self.device)

    def images(self, plans: Tensor) -> Tensor:
        """plans (N, len(PLAN_FIELDS)) float64 → augmented, normalised images (N, 3, H, W) float32 on the
        device (H, W: the transform's output size), in the order of the plans.

        Everything that sizes the work is read from the plans on the CPU, and they go to the device in one
        copy: nothing reads a value back from the device."""
        plans = plans.detach().to("cpu", torch.float64)
        chunks = _chunks(plans)
        order = torch.cat([chunk for chunk, _ in chunks])
        ordered = plans[order]  # the plans chunk after chunk
        on_device = torch.cat([ordered, order[:, None].double()], 1).to(self.device, non_blocking=True)
        levels = []
        start = 0
        for chunk, first in chunks:
            end = start + len(chunk)
            levels.append(self._resampled(on_device[start:end, :-1], ordered[start:end], first))
            start = end
        steps = [
            position for position in (1, 2, 3) if bool((plans[:, _FIELD[f"jitter_{position}"]] >= 0).any())
        ]
        jittered = _jittered(torch.cat(levels), on_device[:, :-1], steps)
        images = self.normalised[jittered.int() + self.channel_offset]
        return torch.empty_like(images).index_copy_(0, on_device[:, -1].long(), images)

    def episode(self, planned: Episode) -> Episode:
        """The loader's episode of plans (``support_images``/``query_images``: (N, len(PLAN_FIELDS))) →
        the same episode on the device with its images (N, 3, H, W)."""
        support_count = len(planned.support_images)
        images = self.images(torch.cat([planned.support_images, planned.query_images]))
        labels = (planned.support_labels, planned.query_labels, planned.class_ids)
        support_labels, query_labels, class_ids = (t.to(self.device, non_blocking=True) for t in labels)
        return Episode(
            images[:support_count], support_labels, images[support_count:], query_labels, class_ids
        )

    def _resampled(self, plans: Tensor, plans_here: Tensor, vertical_first: bool) -> Tensor:
        """A chunk's crops resized as Pillow resizes them, and flipped: plans (n, len(PLAN_FIELDS)) on the
        device and (``plans_here``) on the CPU → (n, 3, H, W) float32 8-bit levels."""
        field = {name: plans[:, position] for name, position in _FIELD.items()}
        here = {
            name: plans_here[:, _FIELD[name]]
            for name in ("height", "width", "resized_height", "resized_width")
        }
        rows, columns = int(here["height"].max()), int(here["width"].max())
        height, width = self.planner.image_size
        index = field["index"].long()
        top, left = field["top"].long(), field["left"].long()
        row = torch.minimum(torch.arange(rows, device=self.device), field["height"].long()[:, None] - 1)
        column = torch.minimum(torch.arange(columns, device=self.device), field["width"].long()[:, None] - 1)
        pixel = (
            (self.first_pixel[index] + top * self.widths[index])[:, None, None]
            + row[:, :, None] * self.widths[index][:, None, None]
            + (left[:, None] + column)[:, None, :]
        )  # (n, rows, columns): each crop pixel's place in the buffer, the last row and column repeated
        crops = self.pixels.index_select(0, pixel.view(-1)).view(len(plans), rows, columns, 3)
        del pixel
        taps = (
            _most_taps(here["height"], here["resized_height"]),
            _most_taps(here["width"], here["resized_width"]),
        )
        down = pillow_bilinear_weights(
            field["height"], field["resized_height"], field["window_top"], height, rows, taps[0]
        )
        across = pillow_bilinear_weights(
            field["width"], field["resized_width"], field["window_left"], width, columns, taps[1]
        )
        flipped = field["flip"].bool()[:, None, None]
        across = torch.where(flipped, across.flip(1), across).transpose(1, 2)
        return pillow_resized_levels(crops, down, across, taps, vertical_first)


def pillow_resized_levels(
    crops: Tensor, down: Tensor, across: Tensor, taps: tuple[int, int], vertical_first: bool
) -> Tensor:
    """Crops resized as Pillow resizes them, exactly: two passes (``_resampled_levels``), each rounded to 8
    bits, horizontal first unless ``vertical_first``.

    Args:
        crops: (n, rows, columns, 3) uint8 pixels.
        down: (n, H, rows) and ``across``: (n, columns, W) Pillow's integer weights (``pillow_bilinear_weights``;
            ``across`` transposed).
        taps: the most non-zero weights of a row of ``down`` and of a column of ``across`` (``_most_taps``).
        vertical_first: Pillow's order of passes for all n (``vertical_pass_first``).

    Returns:
        (n, 3, H, W) float32 8-bit levels.
    """
    n, rows, columns, _ = crops.shape
    height, width = down.shape[1], across.shape[2]
    if vertical_first:  # rows of (columns, 3) pixels, then rows of (3, columns)
        once = _resampled_levels(down, crops.view(n, rows, columns * 3).float(), taps[0])
        once = once.view(n, height, columns, 3).transpose(2, 3).reshape(n, height * 3, columns)
        twice = _resampled_levels(once, across, taps[1])
    else:  # rows of (3, columns) pixels, then rows of (3·W) values
        pixels = crops.transpose(2, 3).to(torch.float32, memory_format=torch.contiguous_format)
        once = _resampled_levels(pixels.view(n, rows * 3, columns), across, taps[1])
        twice = _resampled_levels(down, once.view(n, rows, 3 * width), taps[0])
    return twice.view(n, height, 3, width).permute(0, 2, 1, 3)


def check_against_pillow(planner: AugmentationPlanner, device: torch.device | str) -> None:
    """Make a few images both ways, the transform's (Pillow) and the device's, and refuse where they differ.

    The device reproduces Pillow's arithmetic as Pillow 10-13 compute it (``PILLOW_VERTICAL_FIRST``); another
    build (Pillow-SIMD rounds its weights to fewer bits) or release could compute otherwise. Up to four images
    of each order of resampling passes, drawn from tall, wide and square images of 60-500 pixels a side: a few
    milliseconds.

    Raises:
        FewShotDataError: the images differ; the message names Pillow's version and the way out.
    """
    rng = np.random.default_rng(0)
    sizes = [(500, 140), (140, 500), (400, 300), (300, 400), (260, 100), (100, 260), (120, 120), (60, 90)]
    buffer = DecodedImages.from_arrays(
        [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for height, width in sizes]
    )
    augmentation = DeviceAugmentation(buffer, planner, device, check_pillow=False)
    plans, expected, orders = [], [], {False: 0, True: 0}
    with torch.random.fork_rng(devices=[]):
        for number in range(64):
            index = number % len(sizes)
            torch.manual_seed(number)
            plan = planner.draw(index, *sizes[index])
            sides = [
                plan[_FIELD[name]].view(1) for name in ("height", "resized_height", "width", "resized_width")
            ]
            first = bool(vertical_pass_first(*sides))
            if orders[first] == 4:
                continue
            orders[first] += 1
            plans.append(plan)
            torch.manual_seed(number)  # the transform draws what the plan drew
            expected.append(planner.transform(buffer.image(index)))
            if min(orders.values()) == 4:
                break
    if not torch.equal(augmentation.images(torch.stack(plans)).cpu(), torch.stack(expected)):
        raise FewShotDataError(
            f"augment_on_device reproduces the pixels of Pillow 10 to 13, and this machine's Pillow "
            f"{PIL.__version__} makes other ones; leave augment_on_device off (the loader's workers then "
            "augment the images with this Pillow)"
        )


def _most_taps(in_sizes: Tensor, out_sizes: Tensor) -> int:
    """The most input positions a Pillow bilinear weight row can cover, over images resized from ``in_sizes``
    to ``out_sizes`` (its kernel size: 2·⌈support⌉ + 1, the support being the reduction factor or 1)."""
    return int(torch.ceil((in_sizes / out_sizes).clamp(min=1.0)).max()) * 2 + 1


def vertical_pass_first(
    height: Tensor, resized_height: Tensor, width: Tensor, resized_width: Tensor
) -> Tensor:
    """(n,) bool: whether Pillow resizes each image vertically first. Pillow resamples horizontally, rounds to
    8 bits and resamples vertically; from release 13 it goes the other way round when the height shrinks by
    more than twice as many pixels as the width (H − h > 2·(W − w), H > h), which rounds differently."""
    if not PILLOW_VERTICAL_FIRST:
        return torch.zeros(height.shape, dtype=torch.bool, device=height.device)
    return (height > resized_height) & (height - resized_height > 2 * (width - resized_width))


def pillow_bilinear_weights(
    in_sizes: Tensor, out_sizes: Tensor, starts: Tensor, count: int, length: int, taps: int
) -> Tensor:
    """Pillow's weights for resizing with its bilinear filter (antialiased: widened by the reduction factor
    when downsizing), as a dense matrix per image, computed as Pillow computes them: in float64, in the same
    order of operations, each row's sum taken from its first tap to its last.

    Args:
        in_sizes, out_sizes: (n,) the crop's side and the side it is resized to.
        starts: (n,) the first output position wanted (the window's offset in the resized crop).
        count: how many output positions, from ``starts``.
        length: the matrices' input length (at least every ``in_sizes``; positions past an image's side get 0).
        taps: at least the most input positions a row covers (``_most_taps``).

    Returns:
        (n, count, length) float64: row o holds the weights of output position starts + o as Pillow's
        integers (the weight times 2²², rounded), which sum to 2²² up to that rounding.
    """
    in_sizes, out_sizes = in_sizes.to(torch.float64), out_sizes.to(torch.float64)
    scale = in_sizes / out_sizes  # (n,)
    filter_scale = scale.clamp(min=1.0)
    output = starts.to(torch.float64)[:, None] + torch.arange(count, dtype=torch.float64, device=scale.device)
    centre = (output + 0.5) * scale[:, None]  # (n, count)
    first = (centre - filter_scale[:, None] + 0.5).trunc().clamp(min=0)
    end = torch.minimum((centre + filter_scale[:, None] + 0.5).trunc(), in_sizes[:, None])
    position = first[..., None] + torch.arange(
        taps, dtype=torch.float64, device=scale.device
    )  # (n, count, taps)
    distance = ((position - centre[..., None]) + 0.5) * (1.0 / filter_scale)[:, None, None]
    weights = torch.where(position < end[..., None], (1.0 - distance.abs()).clamp(min=0.0), 0.0)
    total = torch.zeros_like(centre)
    for tap in range(taps):  # Pillow's order of summation, so that the quotients below round as its do
        total = total + weights[..., tap]
    weights = torch.where(total[..., None] > 0, weights / total[..., None], weights)
    weights = torch.floor(weights * float(1 << PRECISION_BITS) + 0.5)
    dense = torch.zeros(len(scale), count, length + taps, dtype=torch.float64, device=scale.device)
    return dense.scatter_(2, position.long(), weights)[..., :length]


def _resampled_levels(left: Tensor, right: Tensor, taps: int) -> Tensor:
    """One resampling pass as Pillow computes it, exactly: the batched product ``left @ right`` ((n, a, b) @
    (n, b, c)), where one factor holds 8-bit levels (float32) and the other Pillow's integer weights (float64,
    ``pillow_bilinear_weights``), plus 2²¹, shifted right by 22 bits and clipped to [0, 255]: (n, a, c) float32
    levels.

    The sums reach 2³⁰, past what float32 holds exactly, so the weights are split into parts of b bits, b as
    large as keeps every sum of products under 2²⁴ with ``taps`` (at least the non-zero weights of a row)
    products (then exact in float32 whatever the summation order, with TF32 off), and the parts' products are
    put together in float64: two parts for up to 16 taps (reductions up to about 8×), more beyond.
    """
    weights_first = left.dtype == torch.float64
    weights = left if weights_first else right
    bits = max(1, int(math.log2((1 << 24) / (255 * taps + 1))))
    integers = weights.long()
    total: Tensor | None = None
    with _exact_float32_products():
        for shift in range(0, PRECISION_BITS + 1, bits):
            part = ((integers >> shift) & ((1 << bits) - 1)).float()
            product = torch.bmm(part, right) if weights_first else torch.bmm(left, part)
            if total is None:
                total = product.double().mul_(float(1 << shift))
            else:
                total.add_(product, alpha=float(1 << shift))
    assert total is not None
    half, one = float(1 << (PRECISION_BITS - 1)), float(1 << PRECISION_BITS)
    return torch.floor((total + half) / one).clamp_(0.0, 255.0).float()


@contextlib.contextmanager
def _exact_float32_products() -> Iterator[None]:
    """float32 matrix products in full float32 precision while the block runs, whatever the process chose
    for speed elsewhere (TF32 on CUDA, bfloat16 through oneDNN on CPUs)."""
    backends = [torch.backends.cuda.matmul, torch.backends.mkldnn.matmul]
    kept = [backend.fp32_precision for backend in backends]
    try:
        for backend in backends:
            backend.fp32_precision = "ieee"
        yield
    finally:
        for backend, precision in zip(backends, kept):
            backend.fp32_precision = precision


def _grey(levels: Tensor) -> Tensor:
    """(n, 3, H, W) 8-bit levels → (n, 1, H, W): Pillow's RGB → L (ITU-R 601-2 luma, 16-bit fixed point)."""
    red, green, blue = levels.to(torch.int32).unbind(1)
    return ((red * 19595 + green * 38470 + blue * 7471 + 32768) >> 16).unsqueeze(1).float()


def _blend(base: Tensor, image: Tensor, factor: Tensor) -> Tensor:
    """Pillow's ``Image.blend(base, image, factor)`` on 8-bit levels: base + factor·(image − base) in float32,
    clipped to [0, 255] and truncated."""
    return (base + factor * (image - base)).clamp_(0.0, 255.0).trunc_()


def _jittered(levels: Tensor, plans: Tensor, steps: Sequence[int] = (1, 2, 3)) -> Tensor:
    """Brightness, contrast and saturation as Pillow's ``ImageEnhance`` applies them, in each image's order:
    (n, 3, H, W) 8-bit levels → the same shape. ``steps``: the positions (1-3) some image jitters at."""
    factors = {name: plans[:, _FIELD[name]].float().view(-1, 1, 1, 1) for name in _JITTER_STEPS}
    for position in steps:
        kind = plans[:, _FIELD[f"jitter_{position}"]].view(-1, 1, 1, 1)
        grey = _grey(levels)
        count = grey.shape[-1] * grey.shape[-2]
        # Pillow's int(sum / count + 0.5), in integers: a GPU divides by a constant as a product, which can
        # round a mean of exactly k + 0.5 down
        total = grey.long().sum((1, 2, 3), keepdim=True)
        grey_mean = torch.div(2 * total + count, 2 * count, rounding_mode="floor").float()
        brightened = _blend(torch.zeros_like(levels[:, :1]), levels, factors["brightness"])
        contrasted = _blend(grey_mean, levels, factors["contrast"])
        saturated = _blend(grey, levels, factors["saturation"])
        levels = torch.where(
            kind == 0,
            brightened,
            torch.where(kind == 1, contrasted, torch.where(kind == 2, saturated, levels)),
        )
    return levels


def _chunks(plans: Tensor) -> list[tuple[Tensor, bool]]:
    """The plans in groups resampled together: (indices, whether Pillow resamples them vertically first),
    sorted by that order and by crop size so that a group's crops are alike, each group's padded crops
    holding at most ``CHUNK_PIXELS`` pixels."""
    sides = [plans[:, _FIELD[name]] for name in ("height", "resized_height", "width", "resized_width")]
    first = vertical_pass_first(*sides)
    area = sides[0] * sides[2]
    groups: list[tuple[Tensor, bool]] = []
    for order in (False, True):
        members = torch.nonzero(first == order).squeeze(1)
        members = members[torch.argsort(area[members], stable=True)]
        start, rows, columns = 0, 0, 0
        for end, (height, width) in enumerate(zip(sides[0][members].tolist(), sides[2][members].tolist())):
            rows, columns = max(rows, int(height)), max(columns, int(width))
            if end > start and (end + 1 - start) * rows * columns > CHUNK_PIXELS:
                groups.append((members[start:end], order))
                start, rows, columns = end, int(height), int(width)
        if start < len(members):
            groups.append((members[start:], order))
    return groups


__all__ = [
    "AugmentationPlanner",
    "CHUNK_PIXELS",
    "DeviceAugmentation",
    "PLAN_FIELDS",
    "PlannedImages",
    "check_against_pillow",
    "pillow_bilinear_weights",
    "pillow_resized_levels",
    "vertical_pass_first",
]
