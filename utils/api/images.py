"""What the Python API accepts as images: file paths, numpy arrays and PIL images, one or a list."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np


def _from_array(array: np.ndarray, where: str) -> np.ndarray:
    """An RGB uint8 HWC array from a numpy image: HWC or CHW, grey, RGB or RGBA (alpha dropped)."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"{where}: a numpy image must be HxW, HxWxC or CxHxW with 1, 3 or 4 channels, "
                         f"got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"{where}: a numpy image must be uint8 (0-255), got {array.dtype}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def load_images(ims: Any) -> tuple[list[np.ndarray], list[str]]:
    """RGB uint8 HWC arrays and a file name for each input.

    Numpy arrays are read as RGB, YOLOv5's convention (pass an OpenCV image as `im[..., ::-1]`). Files are
    read with OpenCV, as detect.py reads them. URLs are refused: nothing is ever downloaded here.
    """
    items = list(ims) if isinstance(ims, (list, tuple)) else [ims]
    if not items:
        raise ValueError("no images given")
    arrays, files = [], []
    for i, im in enumerate(items):
        name = f"image{i}.jpg"
        if isinstance(im, (str, Path)):
            text = str(im)
            if text.startswith(("http://", "https://", "rtsp://")):
                raise ValueError(f"{text}: URLs are not fetched (this project never downloads); save the image and "
                                 f"pass its path")
            bgr = cv2.imread(text)
            if bgr is None:
                raise FileNotFoundError(f"{text}: not an image file OpenCV can read")
            array, name = bgr[..., ::-1], Path(text).with_suffix(".jpg").name
        elif isinstance(im, np.ndarray):
            array = im
        elif hasattr(im, "convert") and hasattr(im, "size"):  # a PIL image (PIL is not imported unless given one)
            from PIL import ImageOps

            array = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            name = Path(getattr(im, "filename", "") or name).with_suffix(".jpg").name
        else:
            raise TypeError(f"image {i}: a {type(im).__name__}; expected a file path, a numpy array or a PIL image")
        arrays.append(_from_array(np.asarray(array), name if isinstance(im, (str, Path)) else f"image {i}"))
        files.append(name)
    return arrays, files
