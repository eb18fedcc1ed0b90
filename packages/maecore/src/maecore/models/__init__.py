from maecore.models import simmim, vit  # noqa: F401  (register the generic MAE-ViT and SimMIM models)
from maecore.models.mae import MAEOutput, MaskedAutoencoder
from maecore.models.pretrained import load_pretrained
from maecore.models.registry import create_model, list_models, model_arguments, model_package, register_model

__all__ = [
    "MAEOutput",
    "MaskedAutoencoder",
    "create_model",
    "list_models",
    "load_pretrained",
    "model_arguments",
    "model_package",
    "register_model",
]
