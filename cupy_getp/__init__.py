"""cupy-getp: gpt-oss inference on GPUs through CuPy, with a numpy reference of the same model."""

from .config import PRESETS, ModelConfig
from .engine.base import Engine, Trace
from .engine.factory import load
from .errors import GetpError

__version__ = "0.1.0"

__all__ = ["Engine", "GetpError", "ModelConfig", "PRESETS", "Trace", "load", "__version__"]
