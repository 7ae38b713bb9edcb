"""ncdpo: fine-tune diffusion policies with PPO by back-propagating through every denoising step (NCDPO)."""

from ncdpo.errors import NcdpoError

__version__ = "0.1.0"
__all__ = ["NcdpoError", "__version__"]
