"""Keep library chatter (weight-loading bars, generation warnings) out of the user's terminal."""
from __future__ import annotations

import os
import warnings


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # transformers missing or changed: chatter is harmless
        pass
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
