"""Images read from files into arrays [N, C, H, W], C = 1 (grey) or 3 (colour): a folder of
image files, one image file's bytes, or the arrays of an ``.npz``. Pixels are uint8 where the
data are 8-bit (every image file; an array of integers 0..255, of booleans, or of floats that
lie on the grid k/255), else float32 in [0, 1]. Anything unreadable, out of range or of the
wrong shape is one ``DataFileError`` naming the file (and the array).

Image files are decoded with Pillow: 8-bit grey ("1", "L", "LA") stays grey, any other 8-bit
mode (RGB, palette, CMYK, ...) becomes RGB; alpha is dropped. A folder mixing grey and colour
images is colour, its grey images repeated over the three channels.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from vae_lab.components.data.files import DataFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GREY_MODES = ("1", "L", "LA")
COLOUR_MODES = ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
ARRAY_SHAPES = "[N, H, W] (grey), [N, H, W, C] or [N, C, H, W] (C = 1 or 3)"
GRID_TOLERANCE = 1e-4  # in grey levels: a float array within this of k/255 is 8-bit


def decode_image(
    source: Path | zipfile.ZipExtFile, name: str, size: int | None = None
) -> np.ndarray:
    """One 8-bit image as uint8 [C, H, W]; with ``size``, area-averaged (Pillow's box filter)
    to size x size first."""
    try:
        with Image.open(source) as image:
            image.load()
            if image.mode not in GREY_MODES + COLOUR_MODES:
                raise DataFileError(f"{name} is a {image.mode} image: only 8-bit images are read")
            grey = image.mode in GREY_MODES
            image = image.convert("L" if grey else "RGB")
            if size is not None:
                image = image.resize((size, size), Image.Resampling.BOX)
            pixels = np.asarray(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataFileError(
            f"{name} is not a readable image ({type(err).__name__}: {err})"
        ) from err
    return pixels[None] if grey else pixels.transpose(2, 0, 1)


def size_text(image: np.ndarray) -> str:
    return f"{image.shape[-2]}x{image.shape[-1]} (H x W)"


def read_folder(folder: Path) -> np.ndarray:
    """The image files under ``folder`` (sub-folders too, in sorted path order) as uint8
    [N, C, H, W]; they must all be of one size."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataFileError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    images = [decode_image(file, str(file)) for file in files]
    first = images[0]
    for file, image in zip(files, images, strict=True):
        if image.shape[1:] != first.shape[1:]:
            raise DataFileError(
                f"{file} is {size_text(image)}, but {files[0]} is {size_text(first)}: "
                "data=images reads images of one size (resize them first)"
            )
    channels = max(image.shape[0] for image in images)
    return np.stack([np.broadcast_to(image, (channels, *first.shape[1:])) for image in images])


def as_images(array: np.ndarray, name: str) -> np.ndarray:
    """An array of images as [N, C, H, W]: uint8 where 8-bit, else float32 in [0, 1]."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    elif not (array.ndim == 4 and array.shape[1] in (1, 3)):
        raise DataFileError(
            f"{name} has shape {list(array.shape)}: data=images reads {ARRAY_SHAPES}"
        )
    if not len(array):
        raise DataFileError(f"{name} holds no images")
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise DataFileError(f"{name} holds integers outside 0..255: data=images reads 8-bit")
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataFileError(f"{name} holds {array.dtype} values: data=images reads numbers")
    if not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
        raise DataFileError(f"{name} holds values outside [0, 1]: scale them to [0, 1] first")
    levels = array * 255.0
    if np.abs(levels - np.round(levels)).max() <= GRID_TOLERANCE:
        return np.round(levels).astype(np.uint8)
    return array.astype(np.float32)


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of ``keys`` present in the ``.npz`` (``keys[0]`` required) as images
    [N, C, H, W] of one image shape; no pickled objects are loaded."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in keys if key in npz.files}
            held = ", ".join(npz.files) or "nothing"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataFileError(f"{path} is not a readable .npz ({type(err).__name__}: {err})") from err
    if keys[0] not in arrays:
        raise DataFileError(f"{path} has no '{keys[0]}' array (it holds {held})")
    images = {key: as_images(array, f"{path}['{key}']") for key, array in arrays.items()}
    shape = images[keys[0]].shape[1:]
    for key, array in images.items():
        if array.shape[1:] != shape:
            raise DataFileError(
                f"{path}['{key}'] holds images of shape {list(array.shape[1:])}, but "
                f"'{keys[0]}' of {list(shape)} (C, H, W)"
            )
    return images
