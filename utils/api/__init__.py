"""The Python API: Model (YOLOv5's AutoShape) and Detections; hubconf.py serves the same classes to torch.hub."""
from utils.api.model import Model
from utils.api.results import Detections, PandasResults

__all__ = ["Model", "Detections", "PandasResults"]
