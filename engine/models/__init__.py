"""Models the engine can use: one registry (ids, sources, sizes, licences, checksums) and their fetching."""

from .registry import (ModelEntry, ModelUnavailableError, REGISTRY, fetch, is_available, model_entry,
                       models_dir, register, status)

__all__ = ["ModelEntry", "ModelUnavailableError", "REGISTRY", "fetch", "is_available", "model_entry",
           "models_dir", "register", "status"]
