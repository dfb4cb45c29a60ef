"""What a model needs to know about a data set: classes, channels, image size, normalization."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

Size = tuple[int, int]


@dataclass(frozen=True)
class DatasetInfo:
    """Description of a pair of train / validation data sets.

    Attributes:
        name: the data set's name, as given to ``build_datasets``.
        num_classes: number of classes; labels are ints in ``0..num_classes-1``.
        in_channels: channels of every image (1 for grayscale, 3 for RGB).
        image_size: (H, W) of every image the data sets return, in pixels.
        mean: per-channel mean subtracted from images in [0, 1] before dividing by ``std``.
        std: per-channel standard deviation used for normalization.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: Size
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.in_channels < 1:
            raise ValueError(
                f"{self.name}: num_classes and in_channels must be >= 1, got "
                f"{self.num_classes} and {self.in_channels}"
            )
        object.__setattr__(self, "image_size", as_size(self.image_size))
        for what, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != self.in_channels:
                raise ValueError(
                    f"{self.name}: {what} needs one value per channel ({self.in_channels}), "
                    f"got {len(values)}: {values}"
                )
        if min(self.std) <= 0:
            raise ValueError(f"{self.name}: std must be positive, got {self.std}")


def as_size(size: object) -> Size:
    """Return ``size`` (an int or a pair of ints) as a (H, W) tuple of positive ints.

    Raises:
        ValueError: ``size`` is not a positive int or a pair of them.
    """
    pair = (size, size) if _is_int(size) else size
    ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_int(s) for s in pair)
    if not ok or min(pair) < 1:
        raise ValueError(
            f"image size must be a positive int or a pair (H, W) of them, got {size!r}; "
            "use e.g. 32 or (32, 32)"
        )
    return int(pair[0]), int(pair[1])


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
