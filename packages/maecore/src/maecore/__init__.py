"""maecore: the shared masked-autoencoder core of the suite."""

__version__ = "0.1.0"

from maecore.errors import ConfigError, DataError, MAEError  # noqa: E402
from maecore.tokens import Tokenizer, Tokens  # noqa: E402

__all__ = ["ConfigError", "DataError", "MAEError", "Tokenizer", "Tokens", "__version__"]


def __getattr__(name: str):
    # heavy imports (models, tasks) load on first use
    if name in ("create_model", "list_models", "load_pretrained", "register_model", "MaskedAutoencoder"):
        from maecore import models

        return getattr(models, name)
    raise AttributeError(f"module 'maecore' has no attribute {name!r}")
