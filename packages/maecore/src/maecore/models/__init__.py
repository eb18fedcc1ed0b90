from maecore.models import vit  # noqa: F401  (registers the generic MAE-ViT models)
from maecore.models.mae import MAEOutput, MaskedAutoencoder
from maecore.models.pretrained import load_pretrained
from maecore.models.registry import create_model, list_models, model_arguments, register_model

__all__ = [
    "MAEOutput",
    "MaskedAutoencoder",
    "create_model",
    "list_models",
    "load_pretrained",
    "model_arguments",
    "register_model",
]
