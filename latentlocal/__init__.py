"""latentlocal: latent-space reasoning methods for local GGUF models through llama.cpp."""

from latentlocal.errors import LatentLocalError

__all__ = ["LatentLocalError"]
__version__ = "0.1.0"
