"""seal: self-adapting language models (SEAL, Zweiger et al. 2025), on a laptop CPU or a GPU cluster."""
__version__ = "0.1.0"

from .engine.config import InnerConfig, inner_preset  # noqa: E402


def __getattr__(name):
    # Lazy, so that torch-free parts (the ARC task code, the report) import without loading torch.
    if name == "run":
        from .api import run
        return run
    if name == "load_model":
        from .engine.models import load_model
        return load_model
    raise AttributeError(f"module 'seal' has no attribute {name!r}")


__all__ = ["InnerConfig", "inner_preset", "load_model", "run", "__version__"]
