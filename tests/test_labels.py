"""Label parsing: hand-computed boxes, the med view line, and every way a row can be bad."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from utils.data.labels import img2label_paths, parse_label_text, read_label_file, verify_image

SRC = "case.txt"
MED_ROW = "3 0.389 0.415 0.522 0.415 0.522 0.572 0.389 0.572"
MED_FILE = f"{MED_ROW}\n\n0 1 0"  # the real format: polygon, blank line, view line, no trailing newline
MED_BOX = [3, 0.4555, 0.4935, 0.133, 0.157]  # (0.389+0.522)/2, (0.415+0.572)/2, 0.522-0.389, 0.572-0.415


def assert_names(message: str, line: int) -> None:
    assert SRC in message, message
    assert f"line {line}" in message, message


# ---------------------------------------------------------------- boxes and polygons

def test_box_line():
    parsed = parse_label_text("2 0.5 0.25 0.2 0.1\n", SRC, nc=4)
    assert parsed.corrupt is None
    np.testing.assert_allclose(parsed.boxes, [[2, 0.5, 0.25, 0.2, 0.1]], atol=1e-7)
    assert parsed.boxes.dtype == np.float32
    assert parsed.view == -1 and not parsed.view_line_found and parsed.warnings == []


def test_polygon_line_becomes_enclosing_box():
    parsed = parse_label_text(MED_ROW, SRC)
    np.testing.assert_allclose(parsed.boxes, [MED_BOX], atol=1e-6)


def test_non_rectangular_polygon_uses_min_max():
    # triangle (0.1,0.2) (0.5,0.9) (0.3,0.4): x 0.1..0.5, y 0.2..0.9
    parsed = parse_label_text("1 0.1 0.2 0.5 0.9 0.3 0.4", SRC)
    np.testing.assert_allclose(parsed.boxes, [[1, 0.3, 0.55, 0.4, 0.7]], atol=1e-6)


def test_several_rows_mixed_formats():
    parsed = parse_label_text("0 0.5 0.5 0.2 0.2\n" + MED_ROW + "\n", SRC)
    np.testing.assert_allclose(parsed.boxes, [[0, 0.5, 0.5, 0.2, 0.2], MED_BOX], atol=1e-6)


# ---------------------------------------------------------------- the view line

def test_med_format_with_views():
    parsed = parse_label_text(MED_FILE, SRC, nc=4, n_views=3)
    assert parsed.corrupt is None and parsed.warnings == []
    np.testing.assert_allclose(parsed.boxes, [MED_BOX], atol=1e-6)
    assert parsed.view == 1 and parsed.view_line_found


def test_med_format_without_view_task_has_no_phantom_box():
    parsed = parse_label_text(MED_FILE, SRC, nc=4, n_views=None)
    assert parsed.corrupt is None and parsed.warnings == []
    assert parsed.boxes.shape == (1, 5)  # not 2: `0 1 0` must not become a box
    assert parsed.view == -1 and parsed.view_line_found


@pytest.mark.parametrize("view_line, expected", [("1 0 0", 0), ("0 0 1", 2), ("0.0 1.0 0.0", 1)])
def test_view_index(view_line, expected):
    assert parse_label_text(f"{MED_ROW}\n\n{view_line}", SRC, n_views=3).view == expected


def test_view_line_without_blank_separator_is_recognised_by_shape():
    parsed = parse_label_text(f"{MED_ROW}\n0 0 1\n", SRC, n_views=3)
    assert parsed.view == 2 and parsed.boxes.shape == (1, 5)
    parsed = parse_label_text(f"{MED_ROW}\n0 0 1\n", SRC, n_views=None)
    assert parsed.boxes.shape == (1, 5) and parsed.view_line_found


def test_file_without_view_line():
    parsed = parse_label_text(MED_ROW, SRC, n_views=3)
    assert parsed.view == -1 and not parsed.view_line_found and parsed.warnings == []
    assert parsed.boxes.shape == (1, 5)


def test_view_only_file_is_background_with_view():
    parsed = parse_label_text("0 1 0", SRC, n_views=3)
    assert parsed.boxes.shape == (0, 5) and parsed.view == 1 and parsed.corrupt is None
    parsed = parse_label_text("\n0 1 0\n", SRC, n_views=None)
    assert parsed.boxes.shape == (0, 5) and parsed.corrupt is None


@pytest.mark.parametrize(
    "view_line, reason",
    [
        ("0 1", "got 2"),
        ("0 1 0 0", "got 4"),
        ("0 0 0", "exactly one 1, got 0"),
        ("1 1 0", "exactly one 1, got 2"),
        ("0 2 0", "0 or 1"),
        ("a 1 0", "non-numeric"),
    ],
)
def test_malformed_view_line_warns_and_keeps_boxes(view_line, reason):
    parsed = parse_label_text(f"{MED_ROW}\n\n{view_line}", SRC, nc=4, n_views=3)
    assert parsed.corrupt is None
    assert parsed.view == -1
    np.testing.assert_allclose(parsed.boxes, [MED_BOX], atol=1e-6)
    assert len(parsed.warnings) == 1
    assert_names(parsed.warnings[0], 3)
    assert reason in parsed.warnings[0]


def test_last_row_that_cannot_be_a_box_is_read_as_a_bad_view_line():
    # With the view task declared, a last line of 4 values is a (malformed) view line, not a box row:
    # the file keeps its other boxes and only loses its view label.
    parsed = parse_label_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2", SRC, n_views=3)
    assert parsed.corrupt is None and parsed.view == -1 and parsed.boxes.shape == (1, 5)
    assert_names(parsed.warnings[0], 2)
    # without the view task it is an ordinary bad row
    assert parse_label_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2", SRC).corrupt is not None


def test_leading_blank_line_does_not_hide_the_only_box():
    parsed = parse_label_text("\n\n0 0.5 0.5 0.2 0.2", SRC, n_views=3)
    assert parsed.boxes.shape == (1, 5) and parsed.view == -1 and parsed.warnings == []


# ---------------------------------------------------------------- corrupt rows

@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n", 2, "expected 5 values (cls cx cy w h) or a polygon"),
        ("0 0.5 0.5 0.2 0.2 0.3\n", 1, "got 6"),
        ("0 0.5 abc 0.2 0.2\n", 1, "non-numeric value 'abc'"),
        ("0 -0.1 0.5 0.2 0.2\n", 1, "negative coordinate"),
        ("0 0.5 1.2 0.2 0.2\n", 1, "> 1"),
        ("0 0.5 0.5 0.2 0.2\n4 0.5 0.5 0.2 0.2\n", 2, "class 4"),
        ("1.5 0.5 0.5 0.2 0.2\n", 1, "non-negative integer"),
        ("-1 0.5 0.5 0.2 0.2\n", 1, "non-negative integer"),
        ("0 0.5 0.5 0 0.2\n", 1, "zero-size"),
        ("0 0.3 0.3 0.3 0.3 0.3 0.3\n", 1, "zero-size"),  # degenerate polygon: one point
        ("0 0.5 nan 0.2 0.2\n", 1, "nan"),
        ("0 0.5 0.5 inf 0.2\n", 1, "nan or inf"),
    ],
)
def test_corrupt_rows(text, line, reason):
    parsed = parse_label_text(text, SRC, nc=4)
    assert parsed.corrupt is not None
    assert_names(parsed.corrupt, line)
    assert reason in parsed.corrupt
    assert parsed.boxes.shape == (0, 5)


def test_coordinate_tolerance_just_above_one():
    assert parse_label_text("0 0.5 0.5 1.0000005 0.2", SRC).corrupt is None
    assert parse_label_text("0 0.5 0.5 1.00001 0.2", SRC).corrupt is not None


def test_class_limit_only_when_nc_given():
    assert parse_label_text("7 0.5 0.5 0.2 0.2", SRC).corrupt is None
    assert parse_label_text("7 0.5 0.5 0.2 0.2", SRC, nc=7).corrupt is not None


def test_duplicates_removed_and_counted():
    text = "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.1 0.1\n0 0.5 0.5 0.2 0.2\n0 0.50 0.5 0.2 0.20\n"
    parsed = parse_label_text(text, SRC)
    assert parsed.corrupt is None
    assert parsed.boxes.shape == (2, 5)
    assert parsed.duplicates_removed == 2
    assert len(parsed.warnings) == 2
    assert_names(parsed.warnings[0], 3)
    assert_names(parsed.warnings[1], 4)
    assert "line 1" in parsed.warnings[0]  # says which row it duplicates


@pytest.mark.parametrize("text", ["", "\n", "  \n\n \t\n"])
def test_empty_file_is_background(text):
    parsed = parse_label_text(text, SRC, nc=4, n_views=3)
    assert parsed.corrupt is None and parsed.boxes.shape == (0, 5) and parsed.view == -1
    assert parsed.warnings == []


# ---------------------------------------------------------------- files and images

def test_read_label_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(MED_FILE)
    parsed = read_label_file(path, nc=4, n_views=3)
    assert parsed.view == 1 and parsed.boxes.shape == (1, 5) and parsed.label_found

    missing = read_label_file(tmp_path / "missing.txt", nc=4, n_views=3)
    assert not missing.label_found and missing.corrupt is None and missing.boxes.shape == (0, 5)

    binary = tmp_path / "b.txt"
    binary.write_bytes(b"0 0.5 0.5 0.2 0.2\n\xff\xfe\x00")
    parsed = read_label_file(binary)
    assert parsed.corrupt is not None and "b.txt" in parsed.corrupt and "UTF-8" in parsed.corrupt


def test_read_label_file_reports_its_path(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5\n")
    parsed = read_label_file(path)
    assert str(path) in parsed.corrupt and "line 2" in parsed.corrupt


def _write_image(path, size=(40, 30), fmt=None):
    Image.new("RGB", size, (10, 200, 30)).save(path, format=fmt)


def test_verify_image_good_and_bad(tmp_path):
    good = tmp_path / "good.png"
    _write_image(good, (40, 30))
    assert verify_image(good) == ((30, 40), None)

    tiny = tmp_path / "tiny.png"
    _write_image(tiny, (5, 5))
    shape, reason = verify_image(tiny)
    assert shape is None and "tiny.png" in reason and "10" in reason

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    shape, reason = verify_image(empty)
    assert shape is None and "empty.png" in reason

    jpeg = tmp_path / "cut.jpg"
    _write_image(jpeg, (64, 64), "JPEG")
    data = jpeg.read_bytes()
    assert data[-2:] == b"\xff\xd9"
    jpeg.write_bytes(data[:-2])
    shape, reason = verify_image(jpeg)
    assert shape is None and "truncated JPEG" in reason

    gif = tmp_path / "anim.gif"
    _write_image(gif, (40, 40), "GIF")
    shape, reason = verify_image(gif)
    assert shape is None and "unsupported image format gif" in reason

    assert verify_image(tmp_path / "nope.png")[0] is None


def test_img2label_paths_uses_last_images_folder():
    paths = ["/data/images/set/images/a.b.png", "/x/images/y.jpg", "/flat/z.JPG"]
    assert img2label_paths(paths) == ["/data/images/set/labels/a.b.txt", "/x/labels/y.txt", "/flat/z.txt"]
    real = "/d/train/images/Z2li-unnamed_1_1.mp4-12.png"
    assert img2label_paths([real]) == ["/d/train/labels/Z2li-unnamed_1_1.mp4-12.txt"]
