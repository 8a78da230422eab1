"""Joint model: the YOLOv5 detector plus an image-level view classifier on the same backbone and neck.

The view head reads the neck maps that Detect reads (P3/8, P4/16, P5/32), pools them and classifies the
whole image (cardiac view: PSAX, PLAX, A4C, ...). JointModel subclasses DetectionModel and only adds
`view_head.*` state-dict keys, so detection-only and joint checkpoints load into each other with
strict=False. The view configuration lives in `model.yaml['view_head']`, so a checkpoint's model YAML
alone rebuilds the right model.

DualModel is the other remedy for gradient interference: a detector and a separate view classifier
(ClassificationModel, models/yolov5n-cls.yaml by default) that share no parameter and no buffer, so
neither task's loss can move the other's weights. Its YAML is {"dual": {...}} and build_model rebuilds it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.common import C3, SPPF, Bottleneck, Conv
from models.yolo import ClassificationModel, Detect, DetectionModel, ModelOutputs, load_model_config
from utils.logger import LOGGER

# Indices into forward_features' maps (0 = P3/8, 1 = P4/16, 2 = P5/32) that the view head pools.
# Measured (benchmarks/view_levels.py, 2026-11-24): linear probes of the view on the pooled neck maps
# of a detection-only yolov5n (20 epochs, med train, 3 patient-grouped 20% hold-outs of the train
# split, valid split untouched) scored P3 0.696±0.092, P4 0.687±0.053, P5 0.706±0.065 and all three
# 0.693±0.083 accuracy: no level set is better beyond the hold-out noise. So the default pools all
# three: it costs nothing (448 channels for yolov5n), lets the jointly trained head use whichever
# scale carries the view, and makes every neck layer shared, so GradNorm's W is the deepest one.
DEFAULT_VIEW_LEVELS: tuple[int, ...] = (0, 1, 2)
DEFAULT_VIEW_HIDDEN = 256
DEFAULT_VIEW_DROPOUT = 0.2
VIEW_HEAD_KEY = "view_head"  # key of the view configuration inside model.yaml
DUAL_KEY = "dual"  # top-level key of a DualModel's model.yaml
DEFAULT_CLS_CFG = "yolov5n-cls-thin.yaml"  # the DualModel's view classifier unless told otherwise


class ViewHead(nn.Module):
    """Global-average-pool each map, concatenate, then a one-hidden-layer MLP -> view logits [B, K]."""

    def __init__(self, in_channels: list[int], n_views: int, hidden: int = DEFAULT_VIEW_HIDDEN,
                 dropout: float = DEFAULT_VIEW_DROPOUT) -> None:
        super().__init__()
        if not in_channels or any(int(c) < 1 for c in in_channels):
            raise ValueError(f"ViewHead needs a non-empty list of positive channel counts, got {in_channels}")
        if int(n_views) < 1:
            raise ValueError(f"ViewHead needs n_views >= 1, got {n_views}")
        if int(hidden) < 1:
            raise ValueError(f"ViewHead needs hidden >= 1, got {hidden}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"ViewHead dropout must be in [0, 1), got {dropout}")
        self.in_channels = [int(c) for c in in_channels]
        self.n_views = int(n_views)
        self.hidden = nn.Linear(sum(self.in_channels), int(hidden))
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(float(dropout))
        self.classifier = nn.Linear(int(hidden), self.n_views)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """View logits in the head's own precision (float32 in training), also under mixed-precision autocast.

        Why not float16 under AMP: the head is 0.1 M parameters, so float32 costs nothing, and its logits
        feed log-softmax, where float16's 3 significant digits would round the loss and its gradient.
        The pooling accumulates in that precision too (no float32 copy of the maps is made).
        """
        if len(maps) != len(self.in_channels):
            raise ValueError(f"ViewHead expects {len(self.in_channels)} feature maps, got {len(maps)}")
        dtype = self.hidden.weight.dtype  # float32; float16 only after model.half() (val.py / detect.py --half)
        pooled = torch.cat([m.mean(dim=(2, 3), dtype=dtype) for m in maps], dim=1)  # [B, sum(C)]
        with torch.autocast(pooled.device.type, enabled=False):
            return self.classifier(self.dropout(self.act(self.hidden(pooled))))


def _resolve_view_config(saved: dict | None, n_views: int | None, levels: Sequence[int] | None,
                         hidden: int | None, dropout: float | None, n_levels: int) -> dict:
    """Merge explicit arguments over the YAML's view_head entry over the defaults; validate the result."""
    saved = dict(saved or {})
    if n_views is not None and saved.get("n_views") not in (None, n_views):
        LOGGER.info(f"Overriding model.yaml view_head n_views={saved['n_views']} with n_views={n_views}")
    config = {
        "n_views": n_views if n_views is not None else saved.get("n_views"),
        "levels": list(levels if levels is not None else saved.get("levels", DEFAULT_VIEW_LEVELS)),
        "hidden": hidden if hidden is not None else saved.get("hidden", DEFAULT_VIEW_HIDDEN),
        "dropout": dropout if dropout is not None else saved.get("dropout", DEFAULT_VIEW_DROPOUT),
    }
    if config["n_views"] is None:
        raise ValueError("JointModel needs n_views (argument or model.yaml 'view_head: {n_views: K}')")
    config["n_views"], config["hidden"], config["dropout"] = (
        int(config["n_views"]), int(config["hidden"]), float(config["dropout"]))
    config["levels"] = [int(level) for level in config["levels"]]
    bad = [level for level in config["levels"] if not 0 <= level < n_levels]
    if not config["levels"] or bad or len(set(config["levels"])) != len(config["levels"]):
        raise ValueError(f"view levels must be distinct indices in 0..{n_levels - 1}, got {config['levels']}")
    return config


class JointModel(DetectionModel):
    """Detector + view classifier sharing backbone and neck; forward gives ModelOutputs(det, view_logits)."""

    def __init__(
        self,
        cfg: str | Path | dict = "yolov5s.yaml",
        ch: int = 3,
        nc: int | None = None,
        n_views: int | None = None,
        view_levels: tuple[int, ...] | None = None,
        view_hidden: int | None = None,
        view_dropout: float | None = None,
        anchors: int | list | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        """view_* arguments left as None come from cfg['view_head'], else the module defaults."""
        super().__init__(cfg, ch=ch, nc=nc, anchors=anchors, verbose=verbose)
        config = _resolve_view_config(self.yaml.get(VIEW_HEAD_KEY), n_views, view_levels, view_hidden,
                                      view_dropout, n_levels=self.detect.nl)
        self.yaml[VIEW_HEAD_KEY] = config
        level_channels = [conv.in_channels for conv in self.detect.m]
        self.view_head = ViewHead([level_channels[i] for i in config["levels"]], config["n_views"],
                                  config["hidden"], config["dropout"])
        self.view_names = {i: f"view{i}" for i in range(config["n_views"])}

    @property
    def n_views(self) -> int:
        return self.view_head.n_views

    @property
    def view_levels(self) -> tuple[int, ...]:
        """Indices of the forward_features maps the view head pools (0 = P3/8, 1 = P4/16, 2 = P5/32)."""
        return tuple(self.yaml[VIEW_HEAD_KEY]["levels"])

    def forward(self, x: torch.Tensor) -> ModelOutputs:
        features = self.forward_features(x)
        view_logits = self.view_head([features[i] for i in self.view_levels])
        return ModelOutputs(det=self.detect(features), view_logits=view_logits)


class DualModel(nn.Module):
    """Detector + view classifier as two independent networks; forward gives ModelOutputs(det, view_logits).

    Nothing is shared (no parameter, no buffer), so the view loss has zero gradient on the detector and
    the detection loss zero gradient on the classifier: the task weights only scale each network's
    own gradients. The classifier sees the batch itself, or, when cls_imgsz is set and differs from the
    batch's size, the batch resized bilinearly to a cls_imgsz x cls_imgsz square (aspect ratio not kept:
    the cheap choice, and training batches are square letterboxes anyway).
    """

    def __init__(
        self,
        det_cfg: str | Path | dict,
        cls_cfg: str | Path | dict = DEFAULT_CLS_CFG,
        nc: int | None = None,
        n_views: int | None = None,
        cls_imgsz: int | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        """nc / n_views left as None come from the detector / classifier YAML."""
        super().__init__()
        if cls_imgsz is not None and (isinstance(cls_imgsz, bool) or int(cls_imgsz) != cls_imgsz or cls_imgsz < 1):
            raise ValueError(f"cls_imgsz must be a positive integer or None, got {cls_imgsz!r}")
        det_yaml, det_name = load_model_config(det_cfg)
        if det_yaml.pop(VIEW_HEAD_KEY, None) is not None:
            LOGGER.info("DualModel: ignoring the detector YAML's view_head (views come from the separate classifier)")
        cls_yaml, cls_name = load_model_config(cls_cfg)
        self.detector = DetectionModel(det_yaml, nc=nc, verbose=verbose)
        self.classifier = ClassificationModel(cls_yaml, nc=n_views, verbose=verbose)
        self.detector.yaml_file = det_name if det_name != "Model" else "Detector"  # names its summary line
        self.classifier.yaml_file = cls_name if cls_name != "Model" else "Classifier"
        if self.detector.yaml["ch"] != self.classifier.yaml["ch"]:
            raise ValueError(f"detector and classifier must read the same input channels, got "
                             f"{self.detector.yaml['ch']} and {self.classifier.yaml['ch']}")
        self.cls_imgsz = None if cls_imgsz is None else int(cls_imgsz)
        self.yaml = {DUAL_KEY: {"detector": self.detector.yaml, "classifier": self.classifier.yaml,
                                "cls_imgsz": self.cls_imgsz}}
        self.view_names = {i: f"view{i}" for i in range(self.n_views)}

    @property
    def detect(self) -> Detect:
        return self.detector.detect

    @property
    def independent_parts(self) -> dict[str, str]:
        """Network name -> state-dict prefix: what --fitness per-network keeps at its own best epoch."""
        return {"detector": "detector.", "classifier": "classifier."}

    @property
    def stride(self) -> torch.Tensor:
        """The detector's output strides; the classifier has no say in grid alignment."""
        return self.detector.stride

    @property
    def n_views(self) -> int:
        return self.classifier.nc

    @property
    def names(self) -> dict:
        """Detection class names; they live on the detector so both views of the model agree."""
        return self.detector.names

    @names.setter
    def names(self, value: dict) -> None:
        self.detector.names = value

    def classifier_input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as the classifier sees it: x, or x resized to a cls_imgsz square (bilinear)."""
        size = self.cls_imgsz
        if size is None or tuple(x.shape[-2:]) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The detector's Detect inputs (P3, P4, P5 neck maps)."""
        return self.detector.forward_features(x)

    def forward(self, x: torch.Tensor) -> ModelOutputs:
        return ModelOutputs(det=self.detector(x).det, view_logits=self.classifier(self.classifier_input(x)))

    def fuse(self) -> DualModel:
        """Fold BatchNorm into the convolutions of both networks (inference only); returns self."""
        self.detector.fuse()
        self.classifier.fuse()
        return self

    def info(self, imgsz: int | tuple[int, int] = 640) -> dict[str, Any]:
        """Per-network summaries (the classifier at the size it is fed) plus totals; one log line each."""
        detector = self.detector.info(imgsz)
        classifier = self.classifier.info(imgsz if self.cls_imgsz is None else self.cls_imgsz)
        summary: dict[str, Any] = {"detector": detector, "classifier": classifier}
        for key in ("layers", "parameters", "gradients", "gflops"):
            summary[key] = detector[key] + classifier[key]
        LOGGER.info(f"DualModel summary: {summary['parameters']} parameters, {summary['gflops']:.1f} GFLOPs "
                    f"(detector + classifier, nothing shared)")
        return summary


_VIEW_KWARGS = ("view_levels", "view_hidden", "view_dropout")


def _warn_ignored(kwargs: dict, reason: str) -> None:
    ignored = [key for key in _VIEW_KWARGS if kwargs.pop(key, None) is not None]
    if ignored:
        LOGGER.warning(f"build_model: {', '.join(ignored)} ignored, {reason}")


def build_model(model_yaml: dict | str | Path, nc: int | None = None, n_views: int | None = None,
                **kwargs: Any) -> DetectionModel | DualModel:
    """The one model factory.

    A YAML with the 'dual' key -> DualModel (nc / n_views override its sub-YAMLs; cls_imgsz and verbose
    may be passed); else JointModel when n_views is given or the YAML has view_head; else DetectionModel.
    """
    cfg, _ = load_model_config(model_yaml)
    if cfg.get(DUAL_KEY):
        spec = cfg[DUAL_KEY]
        _warn_ignored(kwargs, "a DualModel has no view head on the detector")
        cls_imgsz = kwargs.pop("cls_imgsz", spec.get("cls_imgsz"))
        verbose = kwargs.pop("verbose", False)
        if kwargs:
            raise TypeError(f"build_model got arguments a DualModel does not take: {', '.join(kwargs)}")
        return DualModel(spec["detector"], spec["classifier"], nc=nc, n_views=n_views, cls_imgsz=cls_imgsz,
                         verbose=verbose)
    if n_views is not None or cfg.get(VIEW_HEAD_KEY):
        return JointModel(model_yaml, nc=nc, n_views=n_views, **kwargs)
    _warn_ignored(kwargs, "the model has no view task (no n_views)")
    return DetectionModel(model_yaml, nc=nc, **kwargs)


def view_loss(view_logits: torch.Tensor, views: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the samples with a view label (views >= 0); -1 marks 'no label' and is skipped.

    A batch without any view label gives an exact 0 that is still attached to the graph (zero gradients),
    where plain F.cross_entropy would give NaN.
    """
    if not isinstance(view_logits, torch.Tensor) or view_logits.ndim != 2:
        raise ValueError(f"view_loss expects view_logits shaped [B, K], got {_shape(view_logits)}")
    if not isinstance(views, torch.Tensor) or views.ndim != 1 or views.shape[0] != view_logits.shape[0]:
        raise ValueError(f"view_loss expects views shaped [{view_logits.shape[0]}] to match view_logits "
                         f"{list(view_logits.shape)}, got {_shape(views)}")
    if views.dtype.is_floating_point or views.dtype.is_complex or views.dtype == torch.bool:
        raise ValueError(f"view_loss expects integer (long) view indices, got dtype {views.dtype}")
    n_views = view_logits.shape[1]
    if views.numel():
        low, high = (int(v) for v in torch.aminmax(views))
        if high >= n_views:
            raise ValueError(f"view index {high} out of range for {n_views} view classes (valid: 0..{n_views - 1}, "
                             "-1 = no label)")
        if low < -1:
            raise ValueError(f"view index {low} is invalid (valid: 0..{n_views - 1}, -1 = no label)")
    views = views.to(device=view_logits.device, dtype=torch.long)
    per_sample = F.cross_entropy(view_logits, views, ignore_index=-1, reduction="none",
                                 label_smoothing=label_smoothing)  # ignored samples contribute exactly 0
    n_labelled = (views >= 0).sum().clamp(min=1)
    return per_sample.sum() / n_labelled


def _shape(obj: Any) -> str:
    return f"shape {list(obj.shape)}" if isinstance(obj, torch.Tensor) else f"a {type(obj).__name__}"


def _unwrap_joint(model: nn.Module) -> JointModel:
    core = model.module if hasattr(model, "module") else model
    if not isinstance(core, JointModel):
        raise TypeError(f"expected a JointModel, got {type(core).__name__}")
    return core


def _layers_feeding(model: JointModel, layer_indices: Sequence[int]) -> set[int]:
    """Indices of the model.model layers whose output reaches any of layer_indices (themselves included)."""
    needed: set[int] = set()
    stack = list(layer_indices)
    while stack:
        index = stack.pop()
        if index in needed:
            continue
        needed.add(index)
        sources = model.model[index].f
        for source in [sources] if isinstance(sources, int) else sources:
            if index > 0:  # layer 0's source is the input image
                stack.append(index - 1 if source == -1 else source % index)
    return needed


def _view_source_layers(model: JointModel) -> list[int]:
    """model.model indices of the layers whose outputs are the selected view levels (17/20/23 in v6)."""
    detect_sources = model.detect.f if isinstance(model.detect.f, list) else [model.detect.f]
    detect_index = model.detect.i
    return [detect_index - 1 if detect_sources[level] == -1 else detect_sources[level] % detect_index
            for level in model.view_levels]


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters both task losses depend on: the model.model layers that feed the selected view levels.

    Detect reads every neck output, so every non-Detect layer feeds detection; the view head reads only
    its selected levels, so the shared set is those levels' ancestors. With the default levels (0, 1, 2)
    that is all of model.model except Detect; with levels (0,) the P4/P5 neck (layers 18-23 in v6) only
    serves detection and is left out. Neither Detect nor the view head is ever included.
    """
    joint = _unwrap_joint(model)
    shared = _layers_feeding(joint, _view_source_layers(joint))
    return [p for index in sorted(shared) for p in joint.model[index].parameters()]


def _output_conv(layer: nn.Module) -> nn.Conv2d:
    """The Conv2d whose result is the layer's output (for C3 that is cv3, not the last-registered conv)."""
    if isinstance(layer, Conv):
        return layer.conv
    if isinstance(layer, (C3, Bottleneck, SPPF)):
        return _output_conv(layer.cv3 if isinstance(layer, C3) else layer.cv2)
    if isinstance(layer, nn.Sequential) and len(layer):
        return _output_conv(layer[-1])
    if isinstance(layer, nn.Conv2d):
        return layer
    raise TypeError(f"cannot tell which convolution produces the output of a {type(layer).__name__} layer")


def last_shared_layer(model: nn.Module) -> nn.Conv2d:
    """The convolution GradNorm measures per-task gradient norms on.

    Why this one: in the v6 graph the neck outputs P3 (layer 17), P4 (20) and P5 (23) all feed Detect,
    and the view head reads the same maps, so every layer up to the deepest selected level is shared.
    Layer 23 consumes 17 and 20 (via 18-22), so the layer producing the highest selected level is the
    one closest to both heads; its final Conv2d (C3.cv3.conv) is the last point where both task
    gradients meet before splitting. Levels (0, 1, 2) -> layer 23; levels (0,) -> layer 17.
    """
    joint = _unwrap_joint(model)
    return _output_conv(joint.model[max(_view_source_layers(joint))])


def last_shared_weight(model: nn.Module) -> nn.Parameter:
    """Weight of last_shared_layer(model): the tensor GradNorm takes per-task gradient norms on."""
    return last_shared_layer(model).weight
