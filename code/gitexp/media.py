"""Pictures and texts a task makes at an evaluation, beside its numbers (the template's machinery).

evaluate may return, under any name, beside its metrics:
    from gitexp import media
    return {"loss": loss, "confusion": media.Image(matrix), "sample": media.Text(line)}
media.Image takes a tensor or NumPy array, (H, W), (C, H, W) or (H, W, C) with C 1, 3 or 4, a batch
of them (N, C, H, W) shown as a grid, a PIL image or a matplotlib figure; media.Text a str. At every evaluation of a recorded run, rank 0 writes each
to TensorBoard (the Images and Text tabs, as <set>/<name> at the step) and to
__result__/<tag>/<id>/media/<set>_<name>/<step>.png or .txt; make report shows them. They are
not metrics: no table column, no best, not compared by make check or make rerun.
"""
import io
import math
import re

import numpy as np
import torch

from gitexp.protocol import ConfigError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SHAPES = ("(H, W), (C, H, W) or (H, W, C) with C 1, 3 or 4, a batch of them (N, C, H, W) shown as a grid, a PIL image "
          "or a matplotlib figure")


class Image:
    """A picture: a tensor or array (floats in [0, 1] as they are, other values scaled from their
    minimum to their maximum, so a confusion matrix of counts shows) or a matplotlib figure."""

    def __init__(self, image):
        self.image = image


class Text:
    """A text (a generated line, a report): shown as it is (TensorBoard renders markdown)."""

    def __init__(self, text):
        self.text = text


def is_medium(value):
    return isinstance(value, (Image, Text))


def figure_pixels(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if "matplotlib.pyplot" in __import__("sys").modules:  # a pyplot figure stays open until closed
        __import__("matplotlib.pyplot").pyplot.close(figure)
    return pixels


def pixels(image, name):
    """An Image's picture as an (H, W, 3) or (H, W, 4) uint8 array; a one-line error naming `name`
    for what is not a picture."""
    if hasattr(image, "canvas") and hasattr(image, "savefig"):
        return figure_pixels(image)
    if hasattr(image, "getbands"):  # a PIL image
        image = np.asarray(image.convert("RGBA" if "A" in image.getbands() else "RGB"))
    if torch.is_tensor(image):
        array = image.detach().cpu().float().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
        channels_first = image.dim() in (3, 4) and image.shape[-3] in (1, 3, 4)
    elif isinstance(image, np.ndarray):
        array = image
        channels_first = image.ndim in (3, 4) and image.shape[-1] not in (1, 3, 4) and image.shape[-3] in (1, 3, 4)
    else:
        raise ConfigError(f"evaluate returned media.Image({type(image).__name__}) as {name!r}: give a tensor or "
                          f"NumPy array, {SHAPES}")
    if array.ndim in (3, 4) and channels_first:
        array = np.moveaxis(array, -3, -1)
    if array.ndim == 4 and array.shape[-1] in (1, 3, 4) and 0 not in array.shape:
        array = tiled(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)) or 0 in array.shape:
        raise ConfigError(f"evaluate returned media.Image of shape {tuple(array.shape)} as {name!r}: give {SHAPES}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        low, high = np.nanmin(array), np.nanmax(array)
        if not (low >= 0 and high <= 1):  # counts, logits: their own range
            array = (array - low) / (high - low) if high > low else np.zeros_like(array)
        array = np.round(np.nan_to_num(array) * 255).astype(np.uint8)
    return np.stack([array] * 3, axis=-1) if array.ndim == 2 else array


def tiled(batch):
    """A batch of pictures (N, H, W, C) as one, ceil(sqrt(N)) to a row, 2 pixels apart."""
    count, height, width, channels = batch.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + 2) - 2, columns * (width + 2) - 2, channels), batch.min(), dtype=batch.dtype)
    for index, picture in enumerate(batch):
        top, left = index // columns * (height + 2), index % columns * (width + 2)
        grid[top:top + height, left:left + width] = picture
    return grid


def png(picture):
    """An (H, W, C) uint8 array as PNG bytes."""
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(picture).save(out, format="PNG")
    return out.getvalue()


def prepared(value, name):
    """A medium ready to record: ("png", its bytes, its (H, W, C)) or ("txt", the str, None); a
    one-line error naming `name`."""
    if not NAME.fullmatch(str(name)):
        raise ConfigError(f"evaluate returned a medium named {name!r}: name it with letters, digits, '.', '_' and "
                          "'-' (it names a folder of media/)")
    if isinstance(value, Text):
        if not isinstance(value.text, str):
            raise ConfigError(f"evaluate returned media.Text({type(value.text).__name__}) as {name!r}: give a str")
        return "txt", value.text, None
    picture = pixels(value.image, name)
    return "png", png(picture), picture.shape
