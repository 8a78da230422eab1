"""TorchScript files written by export.py (or YOLOv5's export.py): a traced module plus config.txt."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from utils.backends.base import Backend, Predictions
from utils.export.metadata import ExportedFileError, ExportMetadata


class TorchScriptBackend(Backend):
    """torch.jit.load of a .torchscript file; names, views, stride and input size from its config.txt.

    A TorchScript archive holds TorchScript code, not pickled Python objects; it is still a program, so
    load files you trust, as with any exported model.
    """

    format = "torchscript"

    def __init__(self, weights: str | Path, device: torch.device) -> None:
        extra = {"config.txt": ""}
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)  # torch marks torch.jit as deprecated
                self.module = torch.jit.load(str(weights), _extra_files=extra, map_location=device).eval()
        except (RuntimeError, ValueError, OSError) as e:
            raise ExportedFileError(f"--weights {weights}: not a TorchScript file torch.jit.load can read "
                                    f"({str(e).strip().splitlines()[0][:120]})") from e
        if not extra["config.txt"]:
            raise ExportedFileError(f"--weights {weights}: a TorchScript file without config.txt (not written by "
                                    f"export.py or YOLOv5's export.py), so its names and stride are unknown")
        text = extra["config.txt"]
        meta = ExportMetadata.from_config_json(text.decode() if isinstance(text, bytes) else text, Path(weights))
        super().__init__(weights, device, names=meta.names, view_names=meta.view_names, stride=meta.stride,
                         fixed_shape=None if meta.dynamic else meta.shape, half=meta.half)
        self.metadata = meta

    def _run(self, images: torch.Tensor) -> Predictions:
        with torch.inference_mode():
            out = self.module(images.half() if self.half else images)
        if isinstance(out, (tuple, list)):  # ours: (decoded, view_probs) or decoded; YOLOv5's: (decoded,)
            decoded, views = out[0], (out[1] if len(out) > 1 and self.view_names else None)
        else:
            decoded, views = out, None
        if self.view_names and views is None:
            raise ExportedFileError(f"--weights {self.weights}: its config.txt names views but the module returns "
                                    f"no view probabilities")
        return Predictions(decoded.float(), None if views is None else views.float())
