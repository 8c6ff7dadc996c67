"""facesynth: photorealistic face synthesis in PyTorch."""

__version__ = "0.1.0"

from .errors import FacesynthError  # noqa: E402

__all__ = ["FacesynthError", "__version__"]
