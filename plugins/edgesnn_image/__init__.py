"""Image frontend: a path, PIL image or array -> uint8 HWC of a fixed size (a list -> a batch).

    fe = es.frontend("image", size=(28, 28), channels=1, fit="pad", invert=True)
    x = fe("digit.png")                 # (28, 28, 1) uint8
    fe = es.frontend("image", invert="auto")   # inverts dark-on-light images only (light border)
    xs = fe(["a.png", "b.png"])         # (2, 28, 28, 1) uint8

Resizing keeps the aspect ratio: ``fit="crop"`` scales the image to cover the target and cuts
the centre out, ``fit="pad"`` scales it to fit inside and pads the borders with ``pad_value``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import edgesnn as es

FITS = ("crop", "pad")
RESAMPLES = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
CHANNELS = (1, 3)
INVERTS = (False, True, "auto")
AUTO_LIGHT_BORDER = 128  # invert="auto": an image whose border pixels average at least this is dark on light


class ImageFrontend:
    """Turns images into uint8 (H, W, C) tensors; see the module docstring."""

    name = "image"
    time_axis = False  # the output is one dense frame, not a spike train

    def __init__(self, size=(28, 28), channels: int = 1, fit: str = "crop", pad_value: int = 0,
                 resample: str = "bilinear", invert: bool = False):
        size = tuple(int(s) for s in (size if np.ndim(size) else (size, size)))
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image frontend: size must be (height, width) of positive integers, got {size!r}")
        if channels not in CHANNELS:
            raise ValueError(f"image frontend: channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        if fit not in FITS:
            raise ValueError(f"image frontend: fit must be one of {FITS}, got {fit!r}")
        if resample not in RESAMPLES:
            raise ValueError(f"image frontend: resample must be one of {RESAMPLES}, got {resample!r}")
        if invert not in INVERTS:
            raise ValueError(f"image frontend: invert must be True, False or 'auto', got {invert!r}")
        if not 0 <= int(pad_value) <= 255:
            raise ValueError(f"image frontend: pad_value must be in [0, 255], got {pad_value!r}")
        self.size = size
        self.channels = int(channels)
        self.fit = fit
        self.pad_value = int(pad_value)
        self.resample = resample
        self.invert = invert if invert == "auto" else bool(invert)

    @property
    def config(self) -> dict:
        return {"size": list(self.size), "channels": self.channels, "fit": self.fit,
                "pad_value": self.pad_value, "resample": self.resample, "invert": self.invert}

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.size[0], self.size[1], self.channels)

    def __repr__(self) -> str:
        return f"ImageFrontend({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"

    def __call__(self, raw) -> np.ndarray:
        """One image -> uint8 (H, W, C); a list or tuple of images -> uint8 (N, H, W, C)."""
        if isinstance(raw, (list, tuple)):
            if not raw:
                raise ValueError("image frontend: got an empty list; give at least one image")
            return np.stack([self._one(item, f"item {i}") for i, item in enumerate(raw)])
        return self._one(raw, "input")

    # -- one image -------------------------------------------------------------------------------
    def _one(self, raw, where: str) -> np.ndarray:
        image = self._to_pil(raw, where)
        image = image.convert("L" if self.channels == 1 else "RGB")
        invert = _light_background(image) if self.invert == "auto" else self.invert
        image = self._fit(image)
        out = np.asarray(image, dtype=np.uint8).reshape(self.output_shape)
        return 255 - out if invert else np.ascontiguousarray(out)

    def _to_pil(self, raw, where: str):
        from PIL import Image

        if isinstance(raw, Image.Image):
            return _flatten_alpha(_to_8bit(raw))
        if isinstance(raw, (str, os.PathLike)):
            return _flatten_alpha(_to_8bit(_open(Path(raw))))
        if isinstance(raw, np.ndarray):
            return _flatten_alpha(Image.fromarray(_array_to_uint8(raw, where)))
        raise TypeError(f"image frontend ({where}): expected a path, a PIL image or a numpy array, "
                        f"got {type(raw).__name__}")

    def _fit(self, image):
        from PIL import Image

        height, width = self.size
        scale_h, scale_w = height / image.height, width / image.width
        scale = max(scale_h, scale_w) if self.fit == "crop" else min(scale_h, scale_w)
        new_w = max(1, round(image.width * scale))
        new_h = max(1, round(image.height * scale))
        resample = getattr(Image.Resampling, self.resample.upper())
        resized = image.resize((new_w, new_h), resample=resample)
        if self.fit == "crop":
            left, top = (new_w - width) // 2, (new_h - height) // 2
            return resized.crop((left, top, left + width, top + height))
        fill = self.pad_value if image.mode == "L" else (self.pad_value,) * 3
        canvas = Image.new(image.mode, (width, height), fill)
        canvas.paste(resized, ((width - new_w) // 2, (height - new_h) // 2))
        return canvas


def _light_background(image) -> bool:
    """Whether an image is dark ink on a light background (its border pixels are light): what
    ``invert="auto"`` inverts, so both paper-style and MNIST-style (light on dark) images reach the
    model as light on dark."""
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return bool(border.mean() >= AUTO_LIGHT_BORDER)


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image frontend: no such image file: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image frontend: {path} is refused as a decompression bomb (Pillow's limit is "
                         f"{Image.MAX_IMAGE_PIXELS:,} pixels): {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"image frontend: {path} is not an image Pillow can read "
                         f"(corrupt or another format): {exc}") from exc


def _to_8bit(image):
    """16-bit and 32-bit grayscale images (e.g. 16-bit PNGs) scaled to 8 bits; Pillow's convert would clip."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64) / 257.0            # 0..65535 -> 0..255
    elif image.mode == "I":
        pixels = np.asarray(image, dtype=np.float64)
        pixels = pixels / 257.0 if pixels.max(initial=0) > 255 else pixels  # 16-bit data opened as "I"
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        pixels = pixels * 255.0 if pixels.max(initial=0) <= 1.0 else pixels  # floats in [0, 1]
    else:
        return image
    return Image.fromarray(np.clip(np.floor(pixels + 0.5), 0, 255).astype(np.uint8), "L")


def _flatten_alpha(image):
    """Images with transparency are composited onto black, as the pixels a model sees."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image


def _array_to_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array -> uint8; floats must lie in [0, 1]."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"image frontend ({where}): an array image must be (H, W), (H, W, 1), (H, W, 3) "
                         f"or (H, W, 4), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"image frontend ({where}): the array image is empty, shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"image frontend ({where}): the array image has NaN or infinite values")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise ValueError(f"image frontend ({where}): float images must lie in [0, 1], "
                             f"got [{arr.min():g}, {arr.max():g}]; give uint8 for 0..255 values")
        return np.round(arr * 255.0).astype(np.uint8)
    if arr.dtype.kind in "iub":
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"image frontend ({where}): integer images must lie in [0, 255], "
                             f"got [{arr.min()}, {arr.max()}]")
        return arr.astype(np.uint8)
    raise ValueError(f"image frontend ({where}): unsupported array dtype {arr.dtype}")


@es.hookimpl
def edgesnn_register_frontends(register):
    register("image", ImageFrontend)
