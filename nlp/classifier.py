"""The intent model of one version: FAQ lookup, a calibrated classifier and the intent tree.

`IntentModel.match` tries the levels in order and stops at the first that is sure:

1. exact: the normalised question equals a training example of exactly one intent;
2. near-exact: its character n-grams are almost those of one example (cosine >= NEAR_EXACT);
3. classifier: the most probable intent, if its calibrated probability reaches the threshold;
4. parent: intents form a tree by their dotted names (`refund.status.timeline` is a child of
   `refund.status`, itself a child of `refund`); a parent's probability is its own plus all its
   descendants', so when no intent is sure but they agree on the branch, the deepest parent
   that reaches the threshold answers (with its own reply, often a clarifying question).

Probabilities come from LinearSVC scores calibrated by Platt scaling on cross-validation folds
(scikit-learn's CalibratedClassifierCV), so a threshold of 0.5 means about what it says.
"""

from __future__ import annotations

import logging
import pickle
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from nlp.encoders import Encoder, make_encoder, tfidf_one
from nlp.normalize import normalize

logger = logging.getLogger(__name__)

# Cosine of character 1-3-gram vectors above which a question counts as a known example
# reworded by a typo or a particle ("where is my order" / "where's my order?").
NEAR_EXACT = 0.9
# LinearSVC's regularisation: 0.5 measured best on BANKING77 among 0.3, 0.5 and 1 (docs/nlp.md).
SVC_C = 0.5
CALIBRATION_FOLDS = 3
TOP_GUESSES = 3
# How much more likely a follow-up is to stay in the branch the conversation was about.
CONTEXT_WEIGHT = 4.0
ARTIFACT_FORMAT = 1


@dataclass(frozen=True)
class Guess:
    intent: str
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {"intent": self.intent, "confidence": round(self.confidence, 3)}


@dataclass(frozen=True)
class Match:
    """What the model made of one question. `intent` is None when no level was sure."""

    intent: str | None
    confidence: float
    level: str  # exact, near_exact, classifier, parent, context or none
    guesses: list[Guess] = field(default_factory=list)


def ancestors(name: str) -> list[str]:
    """Proper ancestors of a dotted intent name, nearest first: a.b.c -> [a.b, a]."""
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(len(parts) - 1, 0, -1)]


class _FaqIndex:
    """The training examples themselves, for the exact and near-exact levels."""

    def __init__(self, texts: list[str], labels: list[str]) -> None:
        owners: dict[str, set[str]] = {}
        for text, label in zip(texts, labels, strict=True):
            owners.setdefault(normalize(text), set()).add(label)
        # A question two intents share decides nothing: leave it to the classifier.
        self.exact = {text: next(iter(found)) for text, found in owners.items() if len(found) == 1}
        self.texts = list(self.exact)
        self.labels = [self.exact[text] for text in self.texts]
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), dtype=np.float32)
        # Rows are examples, columns n-grams; kept column-major so one question's few n-grams
        # pick their columns cheaply.
        self.matrix = self.vectorizer.fit_transform(self.texts).tocsc() if self.texts else None

    def find(self, text: str) -> Match | None:
        key = normalize(text)
        if key in self.exact:
            return Match(self.exact[key], 1.0, "exact")
        if self.matrix is None or not key:
            return None
        if not hasattr(self, "_analyzer"):
            self._analyzer = self.vectorizer.build_analyzer()
        columns, weights = tfidf_one(self.vectorizer, key, self._analyzer)
        if not columns:
            return None
        scores = self.matrix[:, columns] @ np.asarray(weights, dtype=np.float32)
        best = int(scores.argmax())
        if scores[best] >= NEAR_EXACT:
            return Match(self.labels[best], float(scores[best]), "near_exact")
        return None


class IntentModel:
    """Everything one model version needs to answer, picklable as a whole."""

    def __init__(self, encoder: str | Encoder = "lexical", c: float = SVC_C) -> None:
        self.encoder = make_encoder(encoder) if isinstance(encoder, str) else encoder
        self.c = c
        self.classes: list[str] = []
        self.classifier: CalibratedClassifierCV | None = None
        self.faq: _FaqIndex | None = None
        self.format = ARTIFACT_FORMAT

    @property
    def encoder_name(self) -> str:
        return self.encoder.name

    def fit(self, texts: list[str], labels: list[str]) -> IntentModel:
        """Train on examples; every intent needs at least two (calibration splits them)."""
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        if len(counts) < 2:
            raise ValueError("Training needs examples of at least two intents.")
        thin = sorted(label for label, count in counts.items() if count < 2)
        if thin:
            raise ValueError(f"Every intent needs at least two examples; not: {', '.join(thin)}.")
        folds = min(CALIBRATION_FOLDS, min(counts.values()))
        features = self.encoder.fit(texts).transform(texts)
        self.classifier = CalibratedClassifierCV(
            LinearSVC(C=self.c), method="sigmoid", cv=folds, ensemble=False
        )
        self.classifier.fit(features, labels)
        self.classes = [str(name) for name in self.classifier.classes_]
        self._unpack_calibration()
        self.faq = _FaqIndex(texts, labels)
        return self

    def _unpack_calibration(self) -> None:
        # The SVC's weights and Platt's (a, b) per class as plain arrays, so scoring one
        # question is two small matrix products instead of a Python loop over 77 calibrators.
        calibrated = self.classifier.calibrated_classifiers_[0]
        svc = calibrated.estimator
        self._coef = np.asarray(svc.coef_, dtype=np.float32).T.copy()  # features x scores
        self._intercept = np.asarray(svc.intercept_, dtype=np.float64)
        self._a = np.array([c.a_ for c in calibrated.calibrators], dtype=np.float64)
        self._b = np.array([c.b_ for c in calibrated.calibrators], dtype=np.float64)

    def _calibrated(self, features: Any) -> np.ndarray:
        """What CalibratedClassifierCV.predict_proba computes (a test holds them equal)."""
        scores = np.asarray(features @ self._coef, dtype=np.float64) + self._intercept
        sigmoid = 1.0 / (1.0 + np.exp(self._a * scores + self._b))
        if len(self.classes) == 2:  # one score: the probability of the second class
            return np.hstack([1.0 - sigmoid, sigmoid])
        total = sigmoid.sum(axis=1, keepdims=True)
        uniform = np.full_like(sigmoid, 1.0 / len(self.classes))
        return np.divide(sigmoid, total, out=uniform, where=total != 0)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Calibrated probability of each class (columns in `self.classes` order) per text."""
        return self._calibrated(self.encoder.transform(texts))

    def predict(self, texts: list[str]) -> list[str]:
        """The classifier's best intent per text (the classifier level alone; for evaluation)."""
        best = self.probabilities(texts).argmax(axis=1)
        return [self.classes[index] for index in best]

    def match(self, text: str, threshold: float, context: str | None = None) -> Match:
        """Run the levels on one question (see the module docstring).

        `context`: the intent the conversation was last about. When the question alone is not
        sure, the classifier is asked again with the intents of that intent's top-level
        branch weighted up (`CONTEXT_WEIGHT`), so a follow-up such as "and how long does that
        take?" after a refund question resolves within refunds.
        """
        probabilities = self._calibrated(self.encoder.transform_one(text))[0]
        order = np.argsort(probabilities)[::-1]
        guesses = [
            Guess(self.classes[index], float(probabilities[index])) for index in order[:TOP_GUESSES]
        ]
        found = self.faq.find(text) if self.faq else None
        if found is not None:
            return Match(found.intent, found.confidence, found.level, guesses)
        decided = self._decide(probabilities, threshold, guesses)
        if decided.intent is None and context:
            branch = context.split(".")[0]
            weights = np.array(
                [CONTEXT_WEIGHT if name.split(".")[0] == branch else 1.0 for name in self.classes]
            )
            weighted = probabilities * weights
            weighted /= weighted.sum()
            again = self._decide(weighted, threshold, guesses)
            if again.intent is not None:
                return Match(again.intent, again.confidence, "context", guesses)
        return decided

    def _decide(self, probabilities: np.ndarray, threshold: float, guesses: list[Guess]) -> Match:
        top = int(probabilities.argmax())
        if probabilities[top] >= threshold:
            return Match(self.classes[top], float(probabilities[top]), "classifier", guesses)
        branch: dict[str, float] = {}
        for name, probability in zip(self.classes, probabilities, strict=True):
            for parent in ancestors(name):
                branch[parent] = branch.get(parent, 0.0) + float(probability)
        for parent in list(branch):
            if parent in self.classes:  # a parent with examples of its own adds its own share
                branch[parent] += float(probabilities[self.classes.index(parent)])
        sure = [name for name, total in branch.items() if total >= threshold]
        if sure:
            deepest = max(sure, key=lambda name: (name.count("."), branch[name]))
            return Match(deepest, branch[deepest], "parent", guesses)
        return Match(None, float(probabilities[top]), "none", guesses)

    # Storage: a version's artifact is this object, pickled and compressed.

    def dumps(self) -> bytes:
        return zlib.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), 6)

    @staticmethod
    def loads(data: bytes) -> IntentModel:
        # Only artifacts this server wrote into its own database are ever loaded.
        model = pickle.loads(zlib.decompress(data))  # noqa: S301
        if getattr(model, "format", None) != ARTIFACT_FORMAT:
            raise ValueError("The stored model was written by another gofly version; retrain it.")
        return model
