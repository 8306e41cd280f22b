"""dogbreed: tell a dog's breed from a photo, and rebuild, measure and improve the model that does it."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def predict(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """See `dogbreed.predict.predict`; imported lazily so `import dogbreed` stays cheap."""
    from .predict import predict as _predict

    return _predict(*args, **kwargs)


__all__ = ["predict", "__version__"]
