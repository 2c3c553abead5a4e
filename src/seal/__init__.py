"""seal: self-adapting language models (SEAL, Zweiger et al. 2025), on a laptop CPU or a GPU cluster."""
__version__ = "0.1.0"

from .config import InnerConfig, inner_preset  # noqa: E402
from .models import load_model  # noqa: E402

__all__ = ["InnerConfig", "inner_preset", "load_model", "__version__"]
