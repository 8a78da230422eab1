"""YOLOv5 models built from a model YAML: the Detect head, the parser, DetectionModel and ClassificationModel."""
from __future__ import annotations

import math
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from models.common import C3, SPPF, Bottleneck, Classify, Concat, Conv
from utils.logger import LOGGER
from utils.paths import ROOT
from utils.torch_utils import count_parameters

MODELS_DIR = ROOT / "models"
STRIDE_PROBE_SIZE = 256  # input side of the dummy forward that measures the output strides
BIAS_INIT_IMAGE_SIZE = 640  # YOLOv5's constant in the objectness-bias prior; used nowhere else


@dataclass(frozen=True)
class ModelOutputs:
    """What every model returns: named fields, so a detection map is never mistaken for logits."""

    det: list[torch.Tensor]  # raw Detect maps, each [B, na, ny, nx, nc + 5]
    view_logits: torch.Tensor | None = None  # image-level classification logits [B, K] (joint models)


class Detect(nn.Module):
    """Per-level 1x1 convolutions predicting na anchors x (xywh, objectness, nc classes) per cell."""

    def __init__(self, nc: int = 80, anchors: list[list[float]] | tuple = (), ch: list[int] | tuple = ()) -> None:
        super().__init__()
        if len(anchors) != len(ch):
            raise ValueError(f"Detect got {len(anchors)} anchor rows for {len(ch)} input levels")
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("stride", torch.zeros(self.nl))
        # Pixels at construction; DetectionModel divides by the strides once they are measured.
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self._cell_offsets: dict[tuple, torch.Tensor] = {}

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Raw maps [B, na, ny, nx, no] per level, in training and inference alike (no decoding)."""
        maps = []
        for conv, x in zip(self.m, xs):
            y = conv(x)
            batch, _, ny, nx = y.shape
            maps.append(y.view(batch, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return maps

    def _cell_offset(self, ny: int, nx: int, device: torch.device, dtype: torch.dtype,
                     cache: bool = True) -> torch.Tensor:
        """(cell_x - 0.5, cell_y - 0.5) grid [1, 1, ny, nx, 2] for a map shape, cached per shape unless told not."""
        key = (ny, nx, device, dtype)
        offset = self._cell_offsets.get(key) if cache else None
        if offset is None:
            ys, xs = torch.meshgrid(
                torch.arange(ny, device=device, dtype=dtype), torch.arange(nx, device=device, dtype=dtype), indexing="ij"
            )
            offset = (torch.stack((xs, ys), dim=-1) - 0.5).view(1, 1, ny, nx, 2)
            if cache:
                self._cell_offsets[key] = offset
        return offset

    def decode(self, maps: list[torch.Tensor], cache: bool = True) -> torch.Tensor:
        """Raw maps -> [B, sum(na*ny*nx), no]: xywh in input pixels, objectness and class scores sigmoided.

        cache=False builds the cell grids from the maps' shapes on every call: what an exported graph must
        do, since a cached grid would be frozen into it as a constant of the tracing size.
        """
        decoded = []
        for level, raw in enumerate(maps):
            batch, na, ny, nx, _ = raw.shape
            stride = self.stride[level].to(raw.dtype)
            anchor_pixels = (self.anchors[level] * self.stride[level]).view(1, na, 1, 1, 2).to(raw.dtype)
            sig = raw.sigmoid()
            xy = (sig[..., :2] * 2 + self._cell_offset(ny, nx, raw.device, raw.dtype, cache)) * stride
            wh = (sig[..., 2:4] * 2) ** 2 * anchor_pixels
            decoded.append(torch.cat((xy, wh, sig[..., 4:]), dim=-1).view(batch, -1, self.no))
        return torch.cat(decoded, dim=1)

    @torch.no_grad()
    def initialize_biases(self) -> None:
        """Priors: about 8 objects per 640-px image for objectness, 0.6 / nc for each class."""
        for conv, stride in zip(self.m, self.stride):
            bias = conv.bias.view(self.na, -1)
            bias[:, 4] += math.log(8 / (BIAS_INIT_IMAGE_SIZE / float(stride)) ** 2)
            bias[:, 5 : 5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))


def check_anchor_order(detect: Detect) -> None:
    """Flip the anchor rows if their sizes run opposite to the strides (small anchors belong to fine maps).

    Call it while `detect.anchors` holds PIXELS: flipping grid-unit anchors would move them to a level
    with another stride and rescale them.
    """
    mean_area = detect.anchors.prod(-1).mean(-1)
    area_trend = mean_area[-1] - mean_area[0]
    stride_trend = detect.stride[-1] - detect.stride[0]
    if area_trend != 0 and area_trend.sign() != stride_trend.sign():
        LOGGER.info("AutoAnchor: Reversing anchor order")
        detect.anchors.copy_(detect.anchors.flip(0))


# Only these names may appear as modules in a model YAML.
MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "C3": C3,
    "Bottleneck": Bottleneck,
    "SPPF": SPPF,
    "Concat": Concat,
    "nn.Upsample": nn.Upsample,
    "Upsample": nn.Upsample,
    "Detect": Detect,
    "Classify": Classify,
}
_CHANNEL_MODULES = (Conv, C3, Bottleneck, SPPF)  # args start with output channels; input channels prepended
_REPEAT_ARG_MODULES = (C3,)  # the repeat count becomes an argument instead of stacking copies


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of divisor that is >= x (channel rounding for width multiples)."""
    return math.ceil(x / divisor) * divisor


def _placeholder_anchors(per_level: int, levels: int) -> list[list[float]]:
    """Square anchors for a YAML that only gives an anchor count; AutoAnchor is expected to replace them."""
    return [[float(2 ** (level + 3) * (j + 1)) for j in range(per_level) for _ in range(2)] for level in range(levels)]


def _resolve_arg(arg: Any, cfg: dict) -> Any:
    """Replace the YAML placeholders 'nc' / 'anchors' / 'None' by their values; everything else stays as typed."""
    if isinstance(arg, str):
        if arg == "nc":
            return cfg["nc"]
        if arg == "anchors":
            return cfg["anchors"]
        if arg == "None":
            return None
    return arg


def parse_model(cfg: dict, ch: list[int], verbose: bool = False) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a YOLOv5 v6 model dict; return them and the indices whose outputs must be kept."""
    depth = cfg.get("depth_multiple", 1.0)
    width = cfg.get("width_multiple", 1.0)
    layers: list[nn.Module] = []
    save: list[int] = []
    channels = list(ch)  # channels[-1] is the previous layer's output; reset to layer outputs at layer 0
    out_channels = channels[-1]
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    for index, (source, repeats, module_name, args) in enumerate(cfg["backbone"] + cfg["head"]):
        module_type = MODULES.get(module_name)
        if module_type is None:
            raise ValueError(f"Unknown module '{module_name}' in layer {index}; allowed: {', '.join(MODULES)}")
        args = [_resolve_arg(a, cfg) for a in args]
        repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
        if module_type in _CHANNEL_MODULES:
            in_channels = channels[source]
            out_channels = make_divisible(args[0] * width, 8)
            args = [in_channels, out_channels, *args[1:]]
            if module_type in _REPEAT_ARG_MODULES:
                args.insert(2, repeats)
                repeats = 1
        elif module_type is Concat:
            out_channels = sum(channels[s] for s in source)
        elif module_type is Detect:
            if isinstance(args[1], int):
                args[1] = _placeholder_anchors(args[1], len(source))
            args.append([channels[s] for s in source])
        elif module_type is Classify:  # like Detect, its output count (nc) is not width-scaled
            args = [channels[source], *args]
            out_channels = args[1]
        else:  # channel-preserving layers such as Upsample
            out_channels = channels[source]
        layer = nn.Sequential(*(module_type(*args) for _ in range(repeats))) if repeats > 1 else module_type(*args)
        layer.i, layer.f, layer.type = index, source, module_name
        layer.np = count_parameters(layer)
        if verbose:
            LOGGER.info(f"{index:>3}{str(source):>18}{repeats:>3}{layer.np:10.0f}  {module_name:<40}{str(args):<30}")
        sources = [source] if isinstance(source, int) else source
        save.extend(s % index for s in sources if s != -1)
        layers.append(layer)
        if index == 0:
            channels = []
        channels.append(out_channels)
    return nn.Sequential(*layers), sorted(set(save))


def load_model_config(cfg: str | Path | dict) -> tuple[dict, str]:
    """Model YAML as a plain dict plus a display name; a bare file name is looked up in models/."""
    if isinstance(cfg, dict):
        return deepcopy(cfg), "Model"
    path = Path(cfg)
    if path.suffix == "":
        path = path.with_suffix(".yaml")
    if not path.is_file():
        candidate = MODELS_DIR / path.name
        if not candidate.is_file():
            raise FileNotFoundError(f"Model config '{cfg}' not found (also looked in {MODELS_DIR})")
        path = candidate
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f), path.stem


class YAMLModel(nn.Module):
    """What every model built by parse_model shares: layer routing, BN folding, FLOP count and summary.

    One copy of this code serves DetectionModel and ClassificationModel alike. A subclass sets
    `yaml`, `yaml_file`, `model` (parse_model's layers) and `save` in its __init__.
    """

    yaml: dict
    yaml_file: str
    model: nn.Sequential
    save: list[int]

    def _set_norm_and_activation_defaults(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps, module.momentum = 1e-3, 0.03
            elif isinstance(module, (nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish)):
                module.inplace = True

    def _run_layers(self, x: torch.Tensor, stop_before: nn.Module | None = None) -> Any:
        """Run model.model feeding each layer its `from` inputs; with stop_before, return that layer's input."""
        kept: list[torch.Tensor | None] = []
        for layer in self.model:
            if layer.f != -1:
                x = kept[layer.f] if isinstance(layer.f, int) else [x if j == -1 else kept[j] for j in layer.f]
            if layer is stop_before:
                return x
            x = layer(x)
            kept.append(x if layer.i in self.save else None)
        if stop_before is not None:
            raise RuntimeError(f"model has no {type(stop_before).__name__} layer")
        return x

    def fuse(self) -> YAMLModel:
        """Fold every Conv's BatchNorm into its convolution (inference only); returns self."""
        LOGGER.info("Fusing layers... ")
        for module in self.model.modules():
            if isinstance(module, Conv):
                module.fuse_bn()
        self.info()
        return self

    def _flop_probe_size(self) -> int:
        """Square input side of the FLOP-counting forward; must be a multiple of the total stride."""
        return 32

    def _gflops(self, imgsz: int | tuple[int, int]) -> float:
        """2 x multiply-accumulates, measured at one small probe input.

        Conv2d work grows with the image area, so it is scaled from the probe to imgsz. Linear layers
        here only ever see globally pooled vectors (Classify, view heads), so their work is counted
        once, unscaled.
        """
        height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        probe = self._flop_probe_size()
        conv_macs = 0
        linear_macs = 0

        def count_conv(module: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
            nonlocal conv_macs
            kernel = module.kernel_size[0] * module.kernel_size[1]
            conv_macs += output.numel() * (module.in_channels // module.groups) * kernel

        def count_linear(module: nn.Linear, _inputs: Any, output: torch.Tensor) -> None:
            nonlocal linear_macs
            linear_macs += output.numel() * module.in_features

        param = next(self.parameters())
        hooks = [m.register_forward_hook(count_conv) for m in self.modules() if isinstance(m, nn.Conv2d)]
        hooks += [m.register_forward_hook(count_linear) for m in self.modules() if isinstance(m, nn.Linear)]
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                self.forward(torch.zeros(1, self.yaml["ch"], probe, probe, device=param.device, dtype=param.dtype))
        finally:
            self.train(was_training)
            for hook in hooks:
                hook.remove()
        return 2 * (conv_macs * (height / probe) * (width / probe) + linear_macs) / 1e9

    def info(self, imgsz: int | tuple[int, int] = 640) -> dict[str, float]:
        """Layer/parameter/gradient counts and GFLOPs at imgsz; also logged as a YOLOv5-style summary line."""
        summary = {
            "layers": len(list(self.modules())),
            "parameters": count_parameters(self),
            "gradients": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "gflops": self._gflops(imgsz),
        }
        name = self.yaml_file.replace("yolov5", "YOLOv5")
        LOGGER.info(
            f"{name} summary: {summary['layers']} layers, {summary['parameters']} parameters, "
            f"{summary['gradients']} gradients, {summary['gflops']:.1f} GFLOPs"
        )
        return summary

    def _build(self, cfg: str | Path | dict, ch: int, nc: int | None, last_layer: type, anchors=None,
               verbose: bool = False) -> int:
        """Load the YAML (nc/anchors overridden if given), build the layers, check the last one; returns ch."""
        self.yaml, self.yaml_file = load_model_config(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc is not None and nc != self.yaml["nc"]:
            LOGGER.info(f"Overriding model.yaml nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = nc
        if anchors is not None:
            LOGGER.info(f"Overriding model.yaml anchors with anchors={anchors}")
            self.yaml["anchors"] = anchors
        self.model, self.save = parse_model(deepcopy(self.yaml), [ch], verbose=verbose)
        if not isinstance(self.model[-1], last_layer):
            raise ValueError(f"The last layer of this model YAML must be {last_layer.__name__}")
        self.names = {i: f"class{i}" for i in range(self.yaml["nc"])}
        self._set_norm_and_activation_defaults()
        return ch



class DetectionModel(YAMLModel):
    """A YOLOv5 detector built from a model YAML; forward returns ModelOutputs with raw Detect maps."""

    def __init__(
        self,
        cfg: str | Path | dict = "yolov5s.yaml",
        ch: int = 3,
        nc: int | None = None,
        anchors: int | list | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        super().__init__()
        ch = self._build(cfg, ch, nc, Detect, anchors=anchors, verbose=verbose)
        self._measure_strides(ch)
        self.detect.initialize_biases()

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    @property
    def stride(self) -> torch.Tensor:
        """Output stride of each Detect level, e.g. tensor([8., 16., 32.])."""
        return self.detect.stride

    @torch.no_grad()
    def _measure_strides(self, ch: int) -> None:
        """Strides from a dummy forward; then anchors go from pixels to grid units."""
        was_training = self.training
        self.eval()
        features = self.forward_features(torch.zeros(1, ch, STRIDE_PROBE_SIZE, STRIDE_PROBE_SIZE))
        self.train(was_training)
        detect = self.detect
        detect.stride.copy_(torch.tensor([STRIDE_PROBE_SIZE / f.shape[-2] for f in features]))
        check_anchor_order(detect)  # anchors are still pixels here
        detect.anchors /= detect.stride.view(-1, 1, 1)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run every layer before Detect; return Detect's inputs (the P3, P4, P5 neck outputs)."""
        features = self._run_layers(x, stop_before=self.detect)
        return features if isinstance(features, list) else [features]

    def forward(self, x: torch.Tensor) -> ModelOutputs:
        return ModelOutputs(det=self.detect(self.forward_features(x)))

    def _flop_probe_size(self) -> int:
        return max(int(self.stride.max()), 32)



class ClassificationModel(YAMLModel):
    """An image classifier built from a model YAML whose last layer is Classify; forward returns logits [B, nc]."""

    def __init__(
        self,
        cfg: str | Path | dict = "yolov5n-cls.yaml",
        ch: int = 3,
        nc: int | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        super().__init__()
        self._build(cfg, ch, nc, Classify, verbose=verbose)

    @property
    def classify(self) -> Classify:
        return self.model[-1]

    @property
    def nc(self) -> int:
        return self.classify.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_layers(x)

    def info(self, imgsz: int | tuple[int, int] = 224) -> dict[str, float]:
        """As YAMLModel.info, but at the usual classification input size (224) by default."""
        return super().info(imgsz)
