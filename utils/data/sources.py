"""What files a path names (folder, glob, .txt list, file) and the --source iterator of detect.py."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import cv2
import numpy as np

from utils.data.augmentations import letterbox
from utils.data.labels import IMAGE_SUFFIXES
from utils.logger import LOGGER

IMG_FORMATS = IMAGE_SUFFIXES
VID_FORMATS = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv")


def file_suffix(path: str) -> str:
    return os.path.splitext(path)[1][1:].lower()


def expand_source(source: str | Path | list | tuple) -> list[str]:
    """All files named by a folder (recursive), a .txt list, a glob, a file, or a list of these."""
    if isinstance(source, (list, tuple)):
        return [f for item in source for f in expand_source(item)]
    text = str(source)
    if any(char in text for char in "*?["):
        return sorted(glob.glob(text, recursive=True))
    path = Path(os.path.abspath(text))  # absolute, but symlinked files keep their own names
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file())
    if path.is_file() and path.suffix.lower() == ".txt":  # one image path per line
        base = str(path.parent)
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [base + line[1:] if line.startswith("./") else line for line in lines]
    if path.is_file():
        return [str(path)]
    raise FileNotFoundError(f"{text} does not exist")


def find_images(path: str | Path | list) -> list[str]:
    """Sorted image files under `path`; raises FileNotFoundError naming what was missing or empty."""
    images = sorted(f for f in expand_source(path) if file_suffix(f) in IMG_FORMATS)
    if not images:
        raise FileNotFoundError(f"no images found in {path} (supported formats: {', '.join(IMG_FORMATS)})")
    return images


class LoadImages:
    """Iterate images and videos for inference: (path, img [3,H,W] RGB letterboxed, im0 BGR, cap, info)."""

    def __init__(
        self, path: str | Path | list, img_size: int = 640, stride: int = 32, auto: bool = True, vid_stride: int = 1
    ) -> None:
        files = expand_source(path)
        images = [f for f in files if file_suffix(f) in IMG_FORMATS]
        videos = [f for f in files if file_suffix(f) in VID_FORMATS]
        if not images and not videos:
            raise FileNotFoundError(
                f"no images or videos found in {path}. Supported: {', '.join(IMG_FORMATS + VID_FORMATS)}"
            )
        self.files = images + videos
        self.video_flag = [False] * len(images) + [True] * len(videos)
        self.nf = len(self.files)
        self.img_size = img_size
        self.stride = stride
        self.auto = auto
        self.vid_stride = max(1, int(vid_stride))
        self.cap: cv2.VideoCapture | None = None
        self.frame = 0
        self.frames = 0
        self.count = 0

    def __len__(self) -> int:
        return self.nf

    def __iter__(self) -> LoadImages:
        self.count = 0
        return self

    def _open_video(self, path: str) -> None:
        self.frame = 0
        self.cap = cv2.VideoCapture(path)
        self.frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) / self.vid_stride)

    def _next_frame(self) -> np.ndarray | None:
        for _ in range(self.vid_stride):
            if not self.cap.grab():
                return None
        ok, frame = self.cap.retrieve()
        return frame if ok else None

    def __next__(self) -> tuple[str, np.ndarray, np.ndarray, cv2.VideoCapture | None, str]:
        while self.count < self.nf:
            path = self.files[self.count]
            if self.video_flag[self.count]:
                if self.cap is None:
                    self._open_video(path)
                im0 = self._next_frame()
                if im0 is None:  # end of this video (or unreadable): move on
                    if self.frame == 0:
                        LOGGER.warning(f"WARNING ⚠️ no frames could be read from video {path}, skipping")
                    self.cap.release()
                    self.cap = None
                    self.count += 1
                    continue
                self.frame += 1
                info = f"video {self.count + 1}/{self.nf} (frame {self.frame}/{self.frames}) {path}: "
                cap = self.cap
            else:
                self.count += 1
                im0 = cv2.imread(path)
                if im0 is None:
                    LOGGER.warning(f"WARNING ⚠️ image {path} could not be read, skipping")
                    continue
                info = f"image {self.count}/{self.nf} {path}: "
                cap = None
            img = letterbox(im0, self.img_size, stride=self.stride, auto=self.auto)[0]
            img = np.ascontiguousarray(img.transpose((2, 0, 1))[::-1])
            return path, img, im0, cap, info
        raise StopIteration
