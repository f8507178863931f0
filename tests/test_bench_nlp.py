"""Smoke test of bench/nlp.py on tiny data sets: it trains, measures and reports; no timings."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INTENTS = {
    "card_arrival": ["where is my card", "my card has not arrived", "card still not here"],
    "exchange_rate": ["what is the exchange rate", "how much is a euro", "rate for dollars"],
    "lost_card": ["I lost my card", "my card was stolen", "cannot find my card"],
}


def write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def tiny_datasets(root: Path) -> None:
    train = [[f"{text} {n}" if n else text, name] for name, texts in INTENTS.items()
             for text in texts for n in ("", "please")]  # fmt: skip
    test = [[f"hi, {texts[0]}?", name] for name, texts in INTENTS.items()]
    write(root / "banking77" / "train.csv", ["text", "category"], train)
    write(root / "banking77" / "test.csv", ["text", "category"], test)
    bitext = root / "bitext_customer_service"
    write(bitext / "train.csv", ["utterance", "intent", "category"], [r + ["X"] for r in train])
    write(bitext / "dev.csv", ["utterance", "intent", "category"], [r + ["X"] for r in test])


def test_bench_nlp_reports_every_data_set_encoder_and_the_baseline(tmp_path):
    tiny_datasets(tmp_path)
    command = [sys.executable, "-m", "bench.nlp", "--encoders", "lexical"]
    command += ["--datasets-dir", str(tmp_path), "--folds", "2", "--limit-per-intent", "4"]
    command += ["--latency-samples", "2", "--warmup", "1", "--max-seconds", "120"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert report["encoders"] == ["lexical"]
    for name in ("banking77", "bitext"):
        entry = report["datasets"][name]
        assert set(entry) == {"baseline", "lexical"}
        lexical = entry["lexical"]
        assert (lexical["train_examples"], lexical["test_examples"], lexical["intents"]) == (
            12,
            3,
            3,
        )
        assert lexical["latency_ms"]["count"] == 2
        assert entry["baseline"]["latency_ms"]["count"] == 2
        assert 0 <= lexical["accuracy"] <= 1 and lexical["artifact_bytes"] > 0
        assert set(lexical["vs_baseline"]) == {"accuracy", "macro_f1", "latency_p99"}
    starter = report["datasets"]["starter"]
    for language in ("zh", "en"):
        cv = starter[language]["lexical"]
        assert (cv["folds"], cv["examples"]) == (2, 4 * cv["intents"])
        assert cv["intents"] >= 25
