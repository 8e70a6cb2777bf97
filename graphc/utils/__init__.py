"""graphc.utils: the torch.utils pieces inference code imports."""

from . import checkpoint

__all__ = ["checkpoint"]
