"""Anything -> embedding model: the tailor (cut, freeze, projection head) and text encoders."""

from .tailor import EmbeddingModel, display, freeze, to_embedding_model
from .text import TextEncoder

__all__ = ["EmbeddingModel", "TextEncoder", "display", "freeze", "to_embedding_model"]
