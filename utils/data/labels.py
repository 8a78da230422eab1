"""Label-file parsing and image checks: the rules that decide which samples are trusted.

Label files hold one object per row, `cls cx cy w h` (YOLO) or `cls x1 y1 ... xn yn`
(a polygon, kept as its enclosing box), optionally followed by a view line: a one-hot
vector over the dataset's `cls_names` that labels the whole image. The view line is
found by position (the last non-blank line) and by shape, never read as a box; reading
it as a box would create a phantom zero-size box (`0 1 0` -> class 0 at (1, 0)).

Everything here returns a result instead of raising, so one bad file costs one sample,
not a training run.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
MIN_IMAGE_SIDE = 10  # pixels; smaller images carry no usable object
COORD_TOLERANCE = 1e-6  # normalised coordinates may exceed 1 by rounding noise
_EXIF_ORIENTATION_TAG = 0x0112
_ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass
class ParsedLabel:
    """One label file, parsed. `corrupt` set means: skip the sample, `boxes` is then empty."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))  # cls cx cy w h
    view: int = -1  # index into cls_names, -1 = no (valid) view label
    corrupt: str | None = None
    warnings: list[str] = field(default_factory=list)
    duplicates_removed: int = 0
    view_line_found: bool = False
    label_found: bool = True  # False when the label file does not exist (a background image)


class _CorruptRow(ValueError):
    """A row that makes the whole label file untrustworthy."""


def _is_zero_or_one(token: str) -> bool:
    """'0'/'1' and their float spellings ('0.0', '1.0', '1e0') count; anything else does not."""
    try:
        return float(token) in (0.0, 1.0)
    except ValueError:
        return False


def _is_box_shaped(n_tokens: int) -> bool:
    return n_tokens == 5 or (n_tokens >= 7 and n_tokens % 2 == 1)


def _is_view_candidate(
    tokens: list[str], after_separator: bool, n_views: int | None
) -> bool:
    """Whether the last non-blank line should be read as a view line rather than a box."""
    all_binary = all(_is_zero_or_one(t) for t in tokens)
    if n_views is None:  # view task not declared: only skip lines that clearly are one-hot vectors
        return all_binary and (after_separator or len(tokens) != 5)
    return after_separator or not _is_box_shaped(len(tokens)) or (len(tokens) == n_views and all_binary)


def _decode_view(tokens: list[str], n_views: int) -> tuple[int, str | None]:
    """(view index, None) for a valid one-hot line, else (-1, reason)."""
    if len(tokens) != n_views:
        return -1, f"expected {n_views} values (one-hot over cls_names), got {len(tokens)}"
    values = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            return -1, f"non-numeric value {token!r}"
    if any(v not in (0.0, 1.0) for v in values):
        return -1, f"values must be 0 or 1, got {' '.join(tokens)}"
    ones = sum(v == 1.0 for v in values)
    if ones != 1:
        return -1, f"expected exactly one 1, got {ones}"
    return values.index(1.0), None


def _parse_row(tokens: list[str], where: str, nc: int | None) -> list[float]:
    """One object row -> [cls, cx, cy, w, h]; raises _CorruptRow with a reason naming `where`."""
    n = len(tokens)
    if not _is_box_shaped(n):
        raise _CorruptRow(
            f"{where}: expected 5 values (cls cx cy w h) or a polygon (cls x1 y1 x2 y2 x3 y3 ...), got {n}"
        )
    values = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            raise _CorruptRow(f"{where}: non-numeric value {token!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise _CorruptRow(f"{where}: non-finite value (nan or inf)")
    cls, coords = values[0], values[1:]
    if cls < 0 or cls != int(cls):
        raise _CorruptRow(f"{where}: class must be a non-negative integer, got {tokens[0]}")
    if nc is not None and cls >= nc:
        raise _CorruptRow(f"{where}: class {int(cls)} exceeds the dataset's classes 0..{nc - 1}")
    if min(coords) < 0:
        raise _CorruptRow(f"{where}: negative coordinate {min(coords):g}")
    if max(coords) > 1 + COORD_TOLERANCE:
        raise _CorruptRow(f"{where}: coordinate {max(coords):g} > 1 (labels must be normalised)")
    if n == 5:
        cx, cy, w, h = coords
    else:
        xs, ys = coords[0::2], coords[1::2]
        cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
        w, h = max(xs) - min(xs), max(ys) - min(ys)
    if w <= 0 or h <= 0:
        raise _CorruptRow(f"{where}: zero-size box (w={w:g}, h={h:g})")
    return [cls, cx, cy, w, h]


def parse_label_text(
    text: str, source: str = "<label>", nc: int | None = None, n_views: int | None = None
) -> ParsedLabel:
    """Parse a label file's text. Never raises: problems become `corrupt` or `warnings`.

    `n_views` (K = len(cls_names)) declares the view task. The last non-blank line is a
    view candidate when it follows a blank separator line, or cannot be a box row, or is
    K tokens of 0/1. A candidate must be K values of 0/1 (float spellings such as '1.0'
    accepted) with exactly one 1; otherwise it is reported and the image has no view
    label, while its boxes still count. Without `n_views`, a trailing one-hot line is
    skipped silently (it is not a box) so detection-only training ignores it.
    A "blank separator" is a blank line with a non-blank line before it: leading blank
    lines do not turn a file's only box row into a view candidate.
    """
    result = ParsedLabel()
    lines = text.splitlines()
    rows = [(number, line.split()) for number, line in enumerate(lines, 1) if line.strip()]

    if rows:
        last_number, last_tokens = rows[-1]
        after_separator = len(rows) > 1 and not lines[last_number - 2].strip()
        if _is_view_candidate(last_tokens, after_separator, n_views):
            rows = rows[:-1]
            result.view_line_found = True
            if n_views is not None:
                result.view, reason = _decode_view(last_tokens, n_views)
                if reason:
                    result.warnings.append(f"{source} line {last_number}: invalid view line ({reason}); no view label")

    parsed: list[list[float]] = []
    first_seen: dict[tuple[float, ...], int] = {}
    for number, tokens in rows:
        where = f"{source} line {number}"
        try:
            row = _parse_row(tokens, where, nc)
        except _CorruptRow as error:
            return ParsedLabel(
                corrupt=str(error),
                warnings=result.warnings,
                view_line_found=result.view_line_found,
            )
        key = tuple(np.float32(row).tolist())
        if key in first_seen:
            result.duplicates_removed += 1
            result.warnings.append(f"{where}: duplicate of line {first_seen[key]}, removed")
            continue
        first_seen[key] = number
        parsed.append(row)

    if parsed:
        result.boxes = np.array(parsed, dtype=np.float32)
    return result


def read_label_file(path: Path | str, nc: int | None = None, n_views: int | None = None) -> ParsedLabel:
    """Read and parse one label file; a missing file is a background image. Never raises."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ParsedLabel(label_found=False)
    except OSError as error:
        return ParsedLabel(corrupt=f"{path}: cannot read label file ({error})")
    try:
        text = raw.decode("utf-8-sig")  # tolerate a byte-order mark written by some editors
    except UnicodeDecodeError as error:
        return ParsedLabel(corrupt=f"{path}: label file is not UTF-8 text ({error.reason} at byte {error.start})")
    return parse_label_text(text, str(path), nc, n_views)


def _exif_corrected_size(image: Image.Image) -> tuple[int, int]:
    """(w, h) as displayed, i.e. after the EXIF rotation that cv2.imread also applies."""
    width, height = image.size
    try:
        if image.getexif().get(_EXIF_ORIENTATION_TAG) in _ROTATED_ORIENTATIONS:
            return height, width
    except Exception:  # broken EXIF must not hide a usable image
        pass
    return width, height


def verify_image(path: Path | str) -> tuple[tuple[int, int] | None, str | None]:
    """((h, w), None) for a usable image, else (None, reason). Never raises."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.verify()  # checks structure without decoding all pixels
        with Image.open(path) as image:  # verify() leaves the object unusable; reopen for metadata
            image_format = (image.format or "").lower()
            width, height = _exif_corrected_size(image)
        if image_format not in IMAGE_SUFFIXES:
            return None, f"{path}: unsupported image format {image_format or 'unknown'}"
        if min(width, height) < MIN_IMAGE_SIDE:
            return None, f"{path}: image size {width}x{height} is below {MIN_IMAGE_SIDE} pixels"
        if image_format in ("jpeg", "jpg", "mpo"):
            with open(path, "rb") as file:
                file.seek(-2, os.SEEK_END)
                if file.read() != b"\xff\xd9":
                    return None, f"{path}: truncated JPEG (no end-of-image marker)"
        return (height, width), None
    except Exception as error:  # any decoder complaint means the sample is unusable
        return None, f"{path}: {type(error).__name__}: {error}"


def img2label_paths(img_paths: list[str]) -> list[str]:
    """Label path per image: the last /images/ becomes /labels/ and the extension .txt."""
    images_dir, labels_dir = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    label_paths = []
    for image_path in img_paths:
        head, separator, tail = str(image_path).rpartition(images_dir)
        path = head + labels_dir + tail if separator else str(image_path)
        label_paths.append(os.path.splitext(path)[0] + ".txt")
    return label_paths
