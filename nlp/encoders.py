"""Encoders turn normalised texts into feature vectors; the intent classifier learns on those.

Every encoder has the same small interface (`fit`, `transform`, `name`) and is pickled with
the model version it was trained for, so a version always encodes the way it was trained.

- `lexical` (the default): TF-IDF over character n-grams, which need no word boundaries and so
  work for Chinese as they are, plus word unigrams and bigrams, with jieba cutting Chinese runs
  into words. CPU only, no weights to ship, and fast (docs/nlp.md has the figures).
- `embedding`: a sentence-embedding model from an optional package (requirements-embedding.txt).
  It is never part of the default install; asking for it without the package installed fails
  with a sentence saying what to install.
- `hybrid`: both, side by side in one vector.
- `auto` (the configured default) is hybrid where the optional package is installed, else
  lexical; `resolve` decides, when a version is trained, and the version records the result.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion

from nlp.normalize import has_cjk, normalize

logger = logging.getLogger(__name__)

# Runs of Chinese characters, of letters, or of digits: each run is cut into words on its own.
_RUNS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[^\W\d_]+|\d+")
# Features kept per vectorizer, most frequent first. BANKING77 (10,003 questions) yields about
# 110,000 character n-grams; the cap bounds a version's size (77 intents x 100,000 weights).
MAX_FEATURES = 100_000
# How much the embedding part of a hybrid vector counts against the lexical part.
HYBRID_WEIGHT = 2.0


def tfidf_one(vectorizer: TfidfVectorizer, text: str, analyzer: Any = None) -> tuple[list, list]:
    """One text through a fitted TfidfVectorizer, as (column indexes, weights).

    The same numbers as `vectorizer.transform([text])` (a test holds them equal) without
    scikit-learn's per-call validation, which costs milliseconds where this costs microseconds:
    the bot encodes one message at a time.
    """
    vocabulary = vectorizer.vocabulary_
    counts: dict[int, int] = {}
    for token in (analyzer or vectorizer.build_analyzer())(text):
        column = vocabulary.get(token)
        if column is not None:
            counts[column] = counts.get(column, 0) + 1
    if not counts:
        return [], []
    columns = sorted(counts)
    weights = np.array([counts[column] for column in columns], dtype=np.float64)
    if vectorizer.sublinear_tf:
        weights = np.log(weights) + 1.0
    weights *= vectorizer.idf_[columns]
    weights /= np.sqrt(np.dot(weights, weights))
    return columns, weights.tolist()


class EncoderUnavailable(RuntimeError):
    """An encoder was asked for whose optional package is not installed."""


class Encoder(Protocol):
    name: str

    def fit(self, texts: list[str]) -> Encoder: ...

    def transform(self, texts: list[str]) -> Any: ...

    def transform_one(self, text: str) -> Any: ...


_jieba: Any = None


def _cut(run: str) -> list[str]:
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        _jieba = jieba
    return [word for word in _jieba.lcut(run, HMM=True) if word.strip()]


def words(text: str) -> list[str]:
    """Word tokens of a normalised text: jieba's words for Chinese runs, else the run itself."""
    tokens: list[str] = []
    for match in _RUNS.finditer(text):
        run = match.group()
        tokens.extend(_cut(run) if has_cjk(run) else [run])
    return tokens


class LexicalEncoder:
    """Character n-grams (2-5, within word boundaries) and word n-grams (1-2), TF-IDF weighted."""

    name = "lexical"

    def __init__(self) -> None:
        self.union = FeatureUnion(
            [
                (
                    "chars",
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=(1, 5),
                        sublinear_tf=True,
                        max_features=MAX_FEATURES,
                        preprocessor=normalize,
                        dtype=np.float32,
                    ),
                ),
                (
                    "words",
                    TfidfVectorizer(
                        analyzer="word",
                        tokenizer=words,
                        preprocessor=normalize,
                        token_pattern=None,
                        lowercase=False,
                        ngram_range=(1, 2),
                        sublinear_tf=True,
                        max_features=MAX_FEATURES,
                        dtype=np.float32,
                    ),
                ),
            ]
        )

    def fit(self, texts: list[str]) -> LexicalEncoder:
        self.union.fit(texts)
        return self

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        return self.union.transform(texts)

    def transform_one(self, text: str) -> sparse.csr_matrix:
        """`transform([text])`, fast (see `tfidf_one`)."""
        columns, weights, width = self.columns_one(text)
        return sparse.csr_matrix(
            (np.array(weights, dtype=np.float32), columns, [0, len(columns)]), shape=(1, width)
        )

    def columns_one(self, text: str) -> tuple[list[int], list[float], int]:
        """One text's non-zero columns and weights, and the width of the whole vector."""
        if not hasattr(self, "_analyzers"):
            self._analyzers = [vec.build_analyzer() for _, vec in self.union.transformer_list]
        columns: list[int] = []
        weights: list[float] = []
        offset = 0
        for (_, vectorizer), analyzer in zip(
            self.union.transformer_list, self._analyzers, strict=True
        ):
            part_columns, part_weights = tfidf_one(vectorizer, text, analyzer)
            columns += [offset + column for column in part_columns]
            weights += part_weights
            offset += len(vectorizer.vocabulary_)
        return columns, weights, offset


class EmbeddingEncoder:
    """Sentence embeddings from the optional package, centred on the training texts.

    Centring (subtracting the mean training vector, then scaling back to unit length) spreads
    the vectors of one domain apart: raw embeddings of customer questions all point roughly the
    same way, which wastes the linear classifier's margin.
    """

    name = "embedding"

    def __init__(self) -> None:
        # Imported here so that the default install never needs the package.
        from nlp import embedding

        self.model_name = embedding.MODEL_NAME
        self.mean: np.ndarray | None = None

    def fit(self, texts: list[str]) -> EmbeddingEncoder:
        self.mean = self._raw(texts).mean(axis=0) if texts else None
        return self

    def _raw(self, texts: list[str]) -> np.ndarray:
        from nlp import embedding

        return embedding.embed([normalize(text) for text in texts])

    def transform(self, texts: list[str]) -> np.ndarray:
        vectors = self._raw(texts)
        if self.mean is not None:
            vectors = vectors - self.mean
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def transform_one(self, text: str) -> np.ndarray:
        return self.transform([text])


class HybridEncoder:
    """Lexical and embedding features side by side; `weight` scales the embedding part.

    Both parts have unit length before the weight. 2 was chosen on the starter bot's
    cross-validation (accuracy 0.78 at 1, 0.80 at 1.5, 0.79-0.81 at 2, 0.79-0.80 at 3, Chinese
    and English); BANKING77 is the same at 1 and 2 (docs/nlp.md).
    """

    name = "hybrid"

    def __init__(self, weight: float = HYBRID_WEIGHT) -> None:
        self.lexical = LexicalEncoder()
        self.embedding = EmbeddingEncoder()
        self.weight = weight

    def fit(self, texts: list[str]) -> HybridEncoder:
        self.lexical.fit(texts)
        self.embedding.fit(texts)
        return self

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        dense = self.embedding.transform(texts) * self.weight
        return sparse.hstack([self.lexical.transform(texts), sparse.csr_matrix(dense)]).tocsr()

    def transform_one(self, text: str) -> sparse.csr_matrix:
        # One matrix built from both parts' columns: stacking two matrices costs more than
        # the lexical part itself, once per message.
        columns, weights, width = self.lexical.columns_one(text)
        dense = self.embedding.transform_one(text)[0] * self.weight
        columns = columns + list(range(width, width + len(dense)))
        data = np.concatenate([np.asarray(weights, dtype=np.float32), dense.astype(np.float32)])
        return sparse.csr_matrix((data, columns, [0, len(columns)]), shape=(1, width + len(dense)))


ENCODERS = {"lexical": LexicalEncoder, "embedding": EmbeddingEncoder, "hybrid": HybridEncoder}


def resolve(name: str) -> str:
    """The encoder `auto` stands for here: hybrid with the optional package, else lexical.

    Hybrid measured best on every data set of docs/nlp.md; lexical needs nothing extra.
    """
    if name != "auto":
        return name
    try:
        import nlp.embedding  # noqa: F401
    except ImportError:
        return "lexical"
    return "hybrid"


def make_encoder(name: str) -> Encoder:
    """A fresh, unfitted encoder by its configured name."""
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}; use one of {', '.join(sorted(ENCODERS))}.")
    try:
        return ENCODERS[name]()
    except ImportError as exc:
        raise EncoderUnavailable(
            f"The {name} encoder needs the optional packages of requirements-embedding.txt "
            f"(pip install -r requirements-embedding.txt); missing: {exc.name}."
        ) from exc
