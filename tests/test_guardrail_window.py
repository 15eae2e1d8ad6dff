"""StreamCheck: a sliding window over streamed text catches matches across chunks, loses and repeats nothing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import GuardrailSettings, build_settings
from gateway.errors import ContentPolicyViolation
from gateway.guardrails import CheckContext, Fired, Guardrails, Verdict, guardrails_for
from gateway.guardrails.registry import Entry
from gateway.guardrails.window import HOLD, MAX_HOLD, STEP

SECRET = "sk-proj-AbC123xyz456DEF789ghi012JKL"
SPLIT = ["Here is the key: sk-pr", "oj-AbC123xyz456DE", "F789ghi012JKL and that is all."]


def guardrails(**tables: dict[str, Any]) -> Guardrails:
    tables = {name: {"default": True, "stages": ["output"], **table} for name, table in tables.items()}
    return guardrails_for(build_settings({"guardrails": tables}), model=None, profile=None)


def streamed(guard: Guardrails, chunks: list[str]) -> tuple[list[str], str]:
    stream = guard.stream("output")
    sent = [stream.feed(chunk) for chunk in chunks]
    return sent, "".join(sent) + stream.finish()


def test_a_secret_split_across_three_chunks_is_redacted() -> None:
    guard = guardrails(secrets={"type": "pii", "action": "redact", "detectors": ["secret"]})
    sent, out = streamed(guard, SPLIT)
    assert out == "Here is the key: [SECRET] and that is all."
    assert not any("AbC123" in part for part in sent)
    assert guard.fired == [Fired("secrets", "redact", "output", ("secret",))]


def test_a_secret_split_across_three_chunks_is_blocked() -> None:
    guard = guardrails(secrets={"type": "pii", "detectors": ["secret"]})
    stream = guard.stream("output")
    sent = [stream.feed(chunk) for chunk in SPLIT]
    with pytest.raises(ContentPolicyViolation, match="'secrets' \\(output\\)"):
        stream.finish()
    assert "".join(sent) == "" and guard.fired == [Fired("secrets", "block", "output", ("secret",))]


def test_a_block_in_a_long_stream_comes_before_the_secret_is_sent() -> None:
    guard = guardrails(secrets={"type": "pii", "detectors": ["secret"]})
    stream = guard.stream("output")
    sent = []
    with pytest.raises(ContentPolicyViolation):
        for chunk in ["word " * 100, *SPLIT, "more " * 200]:
            sent.append(stream.feed(chunk))
    assert "".join(sent) == ("word " * 100)[:len("".join(sent))] and "sk-" not in "".join(sent)


def test_the_held_back_tail_is_bounded() -> None:
    guard = guardrails(pii={"type": "pii", "action": "redact"})
    stream = guard.stream("output")
    fed = sent = 0
    for _ in range(200):
        fed += 7
        sent += len(stream.feed("a word "))
        assert fed - sent <= HOLD + STEP + 7
    assert fed - sent - len(stream.finish()) == 0


def test_a_long_token_is_held_at_most_max_hold() -> None:
    guard = guardrails(pii={"type": "pii", "action": "redact"})
    stream = guard.stream("output")
    held = 0
    for _ in range(MAX_HOLD // 50 + 10):
        held += 50 - len(stream.feed("x" * 50))
        assert held <= MAX_HOLD + STEP + 50
    assert held == len(stream.finish())


def test_a_private_key_is_held_back_whole_and_redacted() -> None:
    guard = guardrails(secrets={"type": "pii", "action": "redact", "detectors": ["secret"]})
    lines = ["MIIEowIBAAKCAQEA" + "x" * 48 + "\n" for _ in range(25)]
    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + "".join(lines) + "-----END RSA PRIVATE KEY-----"
    sent, out = streamed(guard, ["My key:\n", *[pem[index:index + 10] for index in range(0, len(pem), 10)], "\nDone."])
    assert out == "My key:\n[SECRET]\nDone." and not any("MIIE" in part for part in sent)


def test_a_log_only_guardrail_holds_nothing_back_and_still_sees_spanning_matches() -> None:
    guard = guardrails(watch={"type": "pii", "action": "log", "detectors": ["secret"]})
    sent, out = streamed(guard, SPLIT)
    assert sent == SPLIT and out == "".join(SPLIT)
    assert guard.fired == [Fired("watch", "log", "output", ("secret",))]


def test_max_size_blocks_with_the_chunk_that_passes_it() -> None:
    guard = guardrails(size={"type": "max_size", "max_chars": 10})
    stream = guard.stream("output")
    assert stream.feed("12345") == "12345"
    with pytest.raises(ContentPolicyViolation, match="'size'"):
        stream.feed("678901")


def test_a_check_that_needs_the_whole_text_sees_it_at_finish() -> None:
    seen = []

    def whole(text: str, stage: str, context: CheckContext | None) -> Verdict:
        seen.append((text, stage, context))
        return Verdict("redact", text=text.upper(), what=("shout",))

    context = CheckContext(request_id="r", endpoint="chat", model="m", account_id=1, key_id=2)
    settings = GuardrailSettings(type="webhook", url="https://hook.test/", stages=("output",))
    guard = Guardrails((Entry("hook", settings, whole),), context)
    sent, out = streamed(guard, SPLIT)
    assert sent == ["", "", ""] and out == "".join(SPLIT).upper()
    assert seen == [("".join(SPLIT), "output", context)] and guard.fired == [Fired("hook", "redact", "output",
                                                                                   ("shout",))]


def test_guardrails_chain_in_declared_order() -> None:
    guard = guardrails(
        pii={"type": "pii", "action": "redact", "detectors": ["email"]},
        placeholder={"type": "regex", "action": "redact", "patterns": [{"name": "p", "pattern": r"\[EMAIL\]"}]},
    )
    _, out = streamed(guard, ["write to a@", "b.io please"])
    assert out == "write to [REDACTED] please"


def test_no_guardrail_on_the_stage_passes_everything_at_once() -> None:
    guard = guardrails(inputs={"type": "pii", "stages": ["input"]})
    sent, out = streamed(guard, SPLIT)
    assert sent == SPLIT and out == "".join(SPLIT) and guard.fired == []


WORDS = ["hello", "world", "a@b.io", "mail:", "x.y@mail.example.com", "+1 (555) 123-4567", "4111 1111 1111 1111",
         "4111 1111 1111 1112", "DE89 3704 0044 0532 0130 00", "123-45-6789", "10.0.0.1", "2001:db8::1", SECRET,
         "AKIAIOSFODNN7EXAMPLE", "-----BEGIN RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEA", "-----END RSA PRIVATE KEY-----",
         "2024", "$1,299.00", "\n", "Bluebird", "ok.",
         "020 7946 0958", "555-123-4567"]
texts = st.lists(st.sampled_from(WORDS), max_size=120).map(" ".join)


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(cut, len(text)) for cut in cuts})
    return [text[start:end] for start, end in zip([0, *points], [*points, len(text)], strict=True)]


@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=40))
def test_any_chunking_gives_the_one_shot_redaction(text: str, cuts: list[int]) -> None:
    tables = {"pii": {"type": "pii", "action": "redact"},
              "words": {"type": "regex", "action": "redact", "patterns": [{"name": "w", "pattern": "Bluebird"}]}}
    one_shot = guardrails(**tables).check("output", text)
    _, out = streamed(guardrails(**tables), chunked(text, cuts))
    assert out == one_shot


@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=40))
def test_any_chunking_of_a_log_guardrail_sends_the_text_unchanged(text: str, cuts: list[int]) -> None:
    guard = guardrails(pii={"type": "pii", "action": "log"})
    one_shot = guardrails(pii={"type": "pii", "action": "log"})
    one_shot.check("output", text)
    _, out = streamed(guard, chunked(text, cuts))
    assert out == text and set(guard.fired) == set(one_shot.fired)


@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=40))
def test_any_chunking_blocks_exactly_when_the_one_shot_check_does(text: str, cuts: list[int]) -> None:
    tables = {"emails": {"type": "pii", "action": "redact", "detectors": ["email"]},
              "cards": {"type": "pii", "detectors": ["card"]}}
    try:
        expected: str | None = guardrails(**tables).check("output", text)
    except ContentPolicyViolation:
        expected = None
    stream, sent = guardrails(**tables).stream("output"), []
    try:
        for chunk in chunked(text, cuts):
            sent.append(stream.feed(chunk))
        sent.append(stream.finish())
    except ContentPolicyViolation:
        assert expected is None
        assert "4111 1111 1111 1111" not in "".join(sent)
    else:
        assert "".join(sent) == expected
