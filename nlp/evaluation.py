"""Splitting examples and measuring a model on the part it did not see."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from nlp.classifier import IntentModel

# Confused pairs reported per evaluation, most frequent first.
WORST_PAIRS = 5


def split(
    texts: list[str], labels: list[str], test_share: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Stratified split: each intent gives `test_share` of its examples (at least one, and
    never all but one: an intent keeps two examples for training) to the test part."""
    by_label: dict[str, list[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        by_label.setdefault(label, []).append(text)
    rng = random.Random(seed)
    train_x: list[str] = []
    train_y: list[str] = []
    test_x: list[str] = []
    test_y: list[str] = []
    for label in sorted(by_label):
        examples = by_label[label][:]
        rng.shuffle(examples)
        held = min(max(1, round(len(examples) * test_share)), len(examples) - 2)
        held = max(held, 0)
        test_x += examples[:held]
        test_y += [label] * held
        train_x += examples[held:]
        train_y += [label] * (len(examples) - held)
    return train_x, train_y, test_x, test_y


def measure(model: IntentModel, texts: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-intent precision and recall and the worst confusions."""
    if not texts:
        return {"accuracy": None, "macro_f1": None, "per_intent": {}, "worst_pairs": []}
    predicted = model.predict(texts)
    names = sorted(set(labels) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=names, zero_division=0
    )
    confused = Counter(
        (truth, guess) for truth, guess in zip(labels, predicted, strict=True) if truth != guess
    )
    return {
        "accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "macro_f1": round(float(f1_score(labels, predicted, average="macro", zero_division=0)), 4),
        "test_examples": len(texts),
        "per_intent": {
            name: {
                "precision": round(float(p), 3),
                "recall": round(float(r), 3),
                "f1": round(float(f), 3),
                "support": int(s),
            }
            for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
        },
        "worst_pairs": [
            {"intent": truth, "taken_for": guess, "count": count}
            for (truth, guess), count in confused.most_common(WORST_PAIRS)
        ],
    }


def train_and_measure(
    encoder: str,
    train_x: list[str],
    train_y: list[str],
    test_x: list[str],
    test_y: list[str],
) -> tuple[IntentModel, dict[str, Any]]:
    """Fit a model on the train part, measure it on the test part; times included."""
    started = time.perf_counter()
    model = IntentModel(encoder).fit(train_x, train_y)
    trained = time.perf_counter() - started
    metrics = measure(model, test_x, test_y)
    metrics["train_seconds"] = round(trained, 2)
    metrics["train_examples"] = len(train_x)
    metrics["intents"] = len(set(train_y))
    return model, metrics


def cross_validate(
    encoder: str, texts: list[str], labels: list[str], folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Mean accuracy and macro-F1 over stratified folds (each example tested exactly once)."""
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    rng = random.Random(seed)
    fold_of = [0] * len(texts)
    for label in sorted(by_label):
        indexes = by_label[label][:]
        rng.shuffle(indexes)
        for position, index in enumerate(indexes):
            fold_of[index] = position % folds
    accuracies: list[float] = []
    f1s: list[float] = []
    for fold in range(folds):
        train = [i for i in range(len(texts)) if fold_of[i] != fold]
        test = [i for i in range(len(texts)) if fold_of[i] == fold]
        _, metrics = train_and_measure(
            encoder,
            [texts[i] for i in train],
            [labels[i] for i in train],
            [texts[i] for i in test],
            [labels[i] for i in test],
        )
        accuracies.append(metrics["accuracy"])
        f1s.append(metrics["macro_f1"])
    return {
        "folds": folds,
        "accuracy": round(sum(accuracies) / folds, 4),
        "macro_f1": round(sum(f1s) / folds, 4),
        "accuracy_min": min(accuracies),
        "accuracy_max": max(accuracies),
        "examples": len(texts),
        "intents": len(by_label),
    }
