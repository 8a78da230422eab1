"""The graph an exported file holds: an image batch in, decoded boxes (and view probabilities) out.

The project's models return raw Detect maps (ModelOutputs) so that training can take its loss on them;
an exported file instead returns what YOLOv5's exported files return, the decoded predictions, plus
the view probabilities of a joint or dual model as a second output.
"""
from __future__ import annotations

import torch
from torch import nn

from models.yolo import DetectionModel
from models.yolo_cls import DualModel


def model_task(model: nn.Module) -> str:
    """detect, joint or dual: how the model reaches its views (or that it has none)."""
    if isinstance(model, DualModel):
        return "dual"
    return "joint" if getattr(model, "view_names", None) else "detect"


class ExportModule(nn.Module):
    """Wraps a fused eval-mode model: forward(images) -> decoded [B, N, 5 + nc], or (decoded, view_probs [B, K]).

    Decoded columns are YOLOv5's output0: cx, cy, w, h in input pixels, objectness and class scores
    after sigmoid. The cell grids are rebuilt from the map shapes on every call (not cached), so a
    traced graph keeps them tied to the input size.
    """

    def __init__(self, model: DetectionModel | DualModel, with_views: bool) -> None:
        super().__init__()
        self.model = model
        self.with_views = with_views

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(images)
        decoded = self.model.detect.decode(outputs.det, cache=False)
        if not self.with_views:
            return decoded
        return decoded, outputs.view_logits.softmax(1).to(decoded.dtype)
