"""Intent bot benchmark: accuracy, macro-F1, training time and per-message latency per encoder.

Run from the repository root (no database, no server: it measures `nlp/` on its own):

    .venv/bin/python -m bench.nlp                      # every encoder that is installed
    .venv/bin/python -m bench.nlp --encoders lexical --datasets banking77

Data sets (`../shared/datasets/`, see its README for licences):

- banking77: train on `train.csv`, report on `test.csv` (77 intents, English);
- bitext: train on `train.csv`, report on `dev.csv` (27 intents, English);
- starter: the starter bot's own examples (nlp/data/starter_bot.json), 5-fold cross-validated
  for Chinese-only and English-only training; no other language's example is in either run.

For each data set the same run also trains the baseline: what a first attempt would be, word
unigram TF-IDF and scikit-learn's LinearSVC with default settings, no normalisation, no
calibration, no FAQ level. The JSON has each encoder's figures and its ratio to the baseline.

Latency is one `IntentModel.match` call per message (normalise, encode, FAQ, calibrated
classifier, parent aggregation), the path the bot takes, timed with `perf_counter_ns` in this
process over up to `--latency-samples` test messages after `--warmup` calls; the baseline's is
one `Pipeline.predict([text])`. Training time is the wall time of `IntentModel.fit`, which
includes calibration's three extra SVC fits. `--limit-per-intent` keeps only the first N
examples of each intent (for a quick smoke run). One JSON object goes to stdout, progress to
stderr; every loop is bounded by its data and by `--max-seconds`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.loadtest import percentiles

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
MS = 1_000_000


def log(text: str) -> None:
    print(f"[nlp {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def read_csv(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            texts.append(row[text_column])
            labels.append(row[label_column])
    return texts, labels


def limit(texts: list[str], labels: list[str], per_intent: int | None) -> tuple[list, list]:
    if not per_intent:
        return texts, labels
    seen: dict[str, int] = {}
    kept_x: list[str] = []
    kept_y: list[str] = []
    for text, label in zip(texts, labels, strict=True):
        if seen.get(label, 0) < per_intent:
            seen[label] = seen.get(label, 0) + 1
            kept_x.append(text)
            kept_y.append(label)
    return kept_x, kept_y


def load_split(name: str, root: Path) -> tuple[list, list, list, list]:
    if name == "banking77":
        train = read_csv(root / "banking77" / "train.csv", "text", "category")
        test = read_csv(root / "banking77" / "test.csv", "text", "category")
    elif name == "bitext":
        folder = root / "bitext_customer_service"
        train = read_csv(folder / "train.csv", "utterance", "intent")
        test = read_csv(folder / "dev.csv", "utterance", "intent")
    else:
        raise ValueError(f"unknown data set {name}")
    return train[0], train[1], test[0], test[1]


def starter_by_language() -> dict[str, tuple[list[str], list[str]]]:
    from nlp.starter import STARTER_FILE

    data = json.loads(STARTER_FILE.read_text(encoding="utf-8"))
    out: dict[str, tuple[list[str], list[str]]] = {"zh": ([], []), "en": ([], [])}
    for intent in data["intents"]:
        for language, texts in intent["examples"].items():
            out[language][0].extend(texts)
            out[language][1].extend([intent["name"]] * len(texts))
    return out


def available_encoders() -> list[str]:
    from nlp.encoders import EncoderUnavailable, make_encoder

    found = []
    for name in ("lexical", "hybrid", "embedding"):
        try:
            make_encoder(name)
        except EncoderUnavailable as exc:
            log(f"skipping {name}: {exc}")
            continue
        found.append(name)
    return found


def latency(call: Any, texts: list[str], samples: int, warmup: int, deadline: float) -> dict:
    for text in texts[:warmup]:
        call(text)
    timings: list[int] = []
    for text in texts[:samples]:
        if time.monotonic() > deadline:
            break
        started = time.perf_counter_ns()
        call(text)
        timings.append(time.perf_counter_ns() - started)
    return percentiles(timings)


def run_baseline(train_x, train_y, test_x, test_y, args, deadline) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    started = time.perf_counter()
    pipeline = make_pipeline(TfidfVectorizer(), LinearSVC()).fit(train_x, train_y)
    trained = time.perf_counter() - started
    predicted = pipeline.predict(test_x)
    return {
        "what": "word unigram TF-IDF + LinearSVC(C=1), scikit-learn defaults",
        "accuracy": round(float(accuracy_score(test_y, predicted)), 4),
        "macro_f1": round(float(f1_score(test_y, predicted, average="macro")), 4),
        "train_seconds": round(trained, 2),
        "latency_ms": latency(
            lambda text: pipeline.predict([text]),
            test_x,
            args.latency_samples,
            args.warmup,
            deadline,
        ),
    }


def run_encoder(encoder, train_x, train_y, test_x, test_y, args, deadline) -> dict[str, Any]:
    from nlp.evaluation import train_and_measure

    model, metrics = train_and_measure(encoder, train_x, train_y, test_x, test_y)
    metrics.pop("per_intent")
    metrics["artifact_bytes"] = len(model.dumps())
    metrics["latency_ms"] = latency(
        lambda text: model.match(text, args.threshold),
        test_x,
        args.latency_samples,
        args.warmup,
        deadline,
    )
    return metrics


def ratios(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {
        "accuracy": ratio(result["accuracy"], baseline["accuracy"]),
        "macro_f1": ratio(result["macro_f1"], baseline["macro_f1"]),
        "latency_p99": ratio(result["latency_ms"]["p99"], baseline["latency_ms"]["p99"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", help="default: every installed encoder")
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["banking77", "bitext", "starter"],
        choices=["banking77", "bitext", "starter"],
    )
    parser.add_argument("--datasets-dir", type=Path, default=DATASETS)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--limit-per-intent", type=int)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gofly_project.settings")
    import django

    django.setup()
    import sklearn

    deadline = time.monotonic() + args.max_seconds
    encoders = args.encoders or available_encoders()
    report: dict[str, Any] = {
        "benchmark": "nlp",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "scikit_learn": sklearn.__version__,
        },
        "command": "python -m bench.nlp " + " ".join(argv if argv is not None else sys.argv[1:]),
        "encoders": encoders,
        "datasets": {},
    }
    for name in args.datasets:
        if time.monotonic() > deadline:
            log(f"deadline reached before {name}")
            break
        entry: dict[str, Any] = {}
        if name == "starter":
            from nlp.evaluation import cross_validate

            for language, (texts, labels) in starter_by_language().items():
                texts, labels = limit(texts, labels, args.limit_per_intent)
                entry[language] = {}
                for encoder in encoders:
                    log(f"starter {language}: {args.folds}-fold cross-validation, {encoder}")
                    entry[language][encoder] = cross_validate(
                        encoder, texts, labels, folds=args.folds
                    )
            report["datasets"][name] = entry
            continue
        train_x, train_y, test_x, test_y = load_split(name, args.datasets_dir)
        train_x, train_y = limit(train_x, train_y, args.limit_per_intent)
        test_x, test_y = limit(test_x, test_y, args.limit_per_intent)
        log(f"{name}: baseline on {len(train_x)} train / {len(test_x)} test")
        entry["baseline"] = run_baseline(train_x, train_y, test_x, test_y, args, deadline)
        for encoder in encoders:
            log(f"{name}: {encoder}")
            result = run_encoder(encoder, train_x, train_y, test_x, test_y, args, deadline)
            result["vs_baseline"] = ratios(result, entry["baseline"])
            entry[encoder] = result
            log(
                f"{name} {encoder}: accuracy {result['accuracy']} macro-F1 {result['macro_f1']} "
                f"train {result['train_seconds']} s p99 {result['latency_ms']['p99']} ms"
            )
        report["datasets"][name] = entry
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return report


if __name__ == "__main__":
    main()
