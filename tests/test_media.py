"""Images, audio, moderations and rerank through the gateway: the official openai SDK against a loopback fake,
priced per unit (image, audio second, character, search unit, request), charged as the usage row says."""

from __future__ import annotations

import io
import threading

import openai
import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey, UsageEntry
from tests.fake_media import IMAGE_TOKENS, PNG_PIXEL, SPEECH_CHUNKS, TRANSCRIPT, FakeMedia, wav_file
from tests.polling import wait_until

FUNDS = 10_000_000  # micro-credits: 10 credits
MODELS = {
    "image-model": {"provider": "media", "upstream_model": "dall-e-3", "image_price": 0.04,
                    "image_prices": {"1024x1024/hd": 0.08, "1792x1024": 0.08}},
    "gpt-image": {"provider": "media", "upstream_model": "gpt-image-1", "input_price_per_mtok": 5.0,
                  "output_price_per_mtok": 40.0, "max_output_tokens": 1000},
    "whisper": {"provider": "media", "upstream_model": "whisper-1", "audio_price_per_minute": 0.6},
    "tts": {"provider": "media", "upstream_model": "tts-1", "speech_price_per_kchar": 1.0},
    "moderation": {"provider": "media", "upstream_model": "omni-moderation-latest"},
    "paid-moderation": {"provider": "media", "upstream_model": "omni-moderation-latest", "moderation_price": 0.001},
    "reranker": {"provider": "media", "upstream_model": "bge-reranker", "search_unit_price": 0.002},
    "cohere-rerank": {"provider": "media", "upstream_model": "cohere-rerank-v3.5", "search_unit_price": 0.002},
    "azure-whisper": {"provider": "azure", "upstream_model": "whisper-deploy", "audio_price_per_minute": 0.6},
    "azure-moderation": {"provider": "azure", "upstream_model": "moderation-deploy"},
    "claude": {"provider": "claude", "upstream_model": "claude-sonnet-4"},
    "twice-whisper": {"routing": "ordered", "retries": 2, "audio_price_per_minute": 0.6, "deployments": [
        {"provider": "media", "upstream_model": "whisper-1", "name": "first"},
        {"provider": "media2", "upstream_model": "whisper-1", "name": "second"}]},
}
PREFIXES = ["/v1", "/api/v1"]
both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def media():
    fake = FakeMedia().start()
    yield fake
    fake.stop()


@pytest.fixture
def media2():
    fake = FakeMedia().start()
    yield fake
    fake.stop()


@pytest.fixture
def media_settings(make_settings, media, media2):
    """Settings with the media fakes as providers and MODELS (plus any other tables given)."""
    def build(**tables):
        return make_settings(providers={
            "media": {"base_url": media.base_url, "timeout_s": 5},
            "media2": {"base_url": media2.base_url, "timeout_s": 5},
            "azure": {"type": "azure", "base_url": media2.base_url.removesuffix("/v1"),
                      "api_key_env": "AZURE_TEST_KEY", "api_version": "2024-10-21", "timeout_s": 5},
            "claude": {"type": "anthropic", "base_url": "http://127.0.0.1:9", "timeout_s": 5},
        }, models=MODELS, **tables)
    return build


@pytest.fixture
def settings(media_settings):
    return media_settings()


@pytest.fixture
def funded(app, make_key):
    """A key whose account holds FUNDS; yields (secret, account id)."""
    secret = make_key("payer")
    with db.database.connection_context():
        key = ApiKey.get(ApiKey.name == "payer")
        credits.grant_credits(key.account_id, FUNDS)
    return secret, key.account_id


def sdk(live_server: str, secret: str, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server + prefix, api_key=secret, max_retries=0)


def last_row() -> UsageEntry:
    with db.database.connection_context():
        return UsageEntry.select().order_by(UsageEntry.id.desc()).get()


def has_row(**columns) -> bool:
    with db.database.connection_context():
        return UsageEntry.select().where(*[getattr(UsageEntry, name) == value for name, value in columns.items()]
                                         ).exists()


def spent(account_id: int) -> int:
    with db.database.connection_context():
        return FUNDS - credits.balance_of(account_id)


def test_the_fake_answers_the_openai_sdk_directly(media):
    client = openai.OpenAI(base_url=media.base_url, api_key="x", max_retries=0)
    assert len(client.images.generate(model="dall-e-3", prompt="a cat", n=2).data) == 2
    assert client.images.generate(model="gpt-image-1", prompt="a cat").usage.output_tokens == 4160
    assert client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_file(1.5))).usage.seconds == 1.5
    assert client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_file(1.5)),
                                              response_format="text") == TRANSCRIPT + "\n"
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="hi") as answer:
        assert answer.read() == b"".join(SPEECH_CHUNKS)
    assert client.moderations.create(model="omni-moderation-latest", input="hi").results[0].flagged is False


@both_databases
@pytest.mark.parametrize("prefix", PREFIXES)
def test_images_generate_is_charged_per_image_by_size_and_quality(live_server, funded, media, prefix):
    secret, account = funded
    answer = sdk(live_server, secret, prefix).images.generate(model="image-model", prompt="a cat", n=2,
                                                              size="1024x1024", quality="hd")
    assert len(answer.data) == 2 and answer.data[0].b64_json
    row = last_row()
    assert (row.endpoint, row.model, row.status, row.unit, row.units) == (
        "images/generations", "image-model", 200, "image:1024x1024/hd", 2)
    assert row.cost == spent(account) == 2 * 80_000
    assert media.requests[-1]["fields"]["model"] == "dall-e-3"  # the deployment's upstream model
    sdk(live_server, secret, prefix).images.generate(model="image-model", prompt="a dog", size="512x512")
    assert (last_row().unit, last_row().cost) == ("image:512x512", 40_000)  # an unlisted size: image_price


def test_image_tokens_are_charged_in_full_past_a_short_hold(live_server, funded):
    secret, account = funded
    answer = sdk(live_server, secret).images.generate(model="gpt-image", prompt="a cat")
    assert answer.usage.output_tokens == IMAGE_TOKENS["output_tokens"]  # more than the 1,000 held
    row = last_row()
    expected = IMAGE_TOKENS["input_tokens"] * 5 + IMAGE_TOKENS["output_tokens"] * 40
    assert (row.prompt_tokens, row.completion_tokens, row.cost, spent(account)) == (50, 4160, expected, expected)


def test_images_edit_sends_the_upload_upstream_in_parts(live_server, funded, media):
    secret, account = funded
    large = PNG_PIXEL + bytes(700_000)  # past werkzeug's 500 KB: spooled to a temporary file
    answer = sdk(live_server, secret).images.edit(model="image-model", image=("big.png", large, "image/png"),
                                                  mask=("mask.png", PNG_PIXEL, "image/png"), prompt="add a hat")
    assert len(answer.data) == 1
    sent = media.requests[-1]
    assert sent["files"] == {"image": ("big.png", len(large)), "mask": ("mask.png", len(PNG_PIXEL))}
    assert sent["fields"]["model"] == "dall-e-3" and sent["fields"]["prompt"] == "add a hat"
    assert not sent["chunked"]  # a Content-Length body, built from the parts
    assert last_row().cost == spent(account) == 40_000


def test_images_create_variation(live_server, funded, media):
    secret, account = funded
    answer = sdk(live_server, secret, "/api/v1").images.create_variation(
        model="image-model", image=("a.png", PNG_PIXEL, "image/png"), n=3, size="1792x1024")
    assert len(answer.data) == 3
    assert (last_row().endpoint, last_row().units, spent(account)) == ("images/variations", 3, 3 * 80_000)


@both_databases
@pytest.mark.parametrize("answer_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcriptions_in_every_response_format_are_charged_per_second(live_server, funded, answer_format):
    secret, account = funded
    answer = sdk(live_server, secret).audio.transcriptions.create(
        model="whisper", file=("talk.wav", wav_file(2.5), "audio/wav"), response_format=answer_format)
    text = answer if isinstance(answer, str) else answer.text
    assert TRANSCRIPT in text
    if answer_format == "verbose_json":
        assert answer.duration == 2.5 and answer.segments[0].end == 2.5
    row = last_row()
    assert (row.unit, row.units, row.estimated) == ("audio_second", 2.5, answer_format in ("text", "srt", "vtt"))
    assert row.cost == spent(account) == 25_000  # 2.5 s at 0.6 credits a minute


def test_translations(live_server, funded, media):
    secret, account = funded
    answer = sdk(live_server, secret, "/api/v1").audio.translations.create(
        model="whisper", file=("talk.wav", wav_file(4), "audio/wav"), response_format="verbose_json")
    assert answer.text == TRANSCRIPT
    assert media.requests[-1]["path"] == "audio/translations"
    assert (last_row().units, spent(account)) == (4.0, 40_000)


def test_speech_is_streamed_to_a_file_and_charged_per_character(live_server, funded, tmp_path):
    secret, account = funded
    target = tmp_path / "speech.mp3"
    with sdk(live_server, secret).audio.speech.with_streaming_response.create(
            model="tts", voice="alloy", input="hello world") as answer:
        assert answer.headers["content-type"] == "audio/mpeg"
        answer.stream_to_file(target)
    assert target.read_bytes() == b"".join(SPEECH_CHUNKS)
    row = last_row()
    assert (row.endpoint, row.unit, row.units, row.status) == ("audio/speech", "speech_character", 11, 200)
    assert row.cost == spent(account) == 11_000


def test_speech_reaches_the_client_before_the_upstream_has_sent_all_of_it(live_server, funded, media):
    secret, account = funded
    media.speech_release = threading.Event()
    with requests.post(f"{live_server}/v1/audio/speech", headers={"Authorization": f"Bearer {secret}"}, stream=True,
                       json={"model": "tts", "voice": "alloy", "input": "hi"}, timeout=120) as answer:
        pieces = answer.iter_content(chunk_size=None)
        first = next(pieces)  # the upstream holds the rest until the test releases it
        assert SPEECH_CHUNKS[0].startswith(first)
        media.speech_release.set()
        assert first + b"".join(pieces) == b"".join(SPEECH_CHUNKS)
    assert media.speech_released is True  # released by the client's first chunk, not by the fake's own bound
    assert (last_row().status, spent(account)) == (200, 2000)


def test_moderations_are_free_unless_priced(live_server, funded):
    secret, account = funded
    client = sdk(live_server, secret)
    answer = client.moderations.create(model="moderation", input="I like cats")
    assert answer.model == "moderation" and answer.results[0].flagged is False
    assert (last_row().unit, last_row().cost, spent(account)) == ("moderation", 0, 0)
    client.moderations.create(model="paid-moderation", input=["one", "two"])
    assert (last_row().cost, spent(account)) == (1000, 1000)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_rerank_in_vllm_and_cohere_shapes(live_server, funded, media, prefix):
    secret, account = funded
    documents = ["cats purr", "dogs bark", "cats and dogs"]
    headers = {"Authorization": f"Bearer {secret}"}
    answer = requests.post(f"{live_server}{prefix}/rerank", headers=headers, timeout=10,
                           json={"model": "reranker", "query": "cats", "documents": documents, "top_n": 2})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "reranker" and len(answer.json()["results"]) == 2
    assert answer.json()["results"][0]["document"]["text"].startswith("cats")
    assert media.requests[-1]["fields"]["model"] == "bge-reranker"
    assert (last_row().unit, last_row().units, last_row().prompt_tokens, last_row().cost) == (
        "search_unit", 1, 42, 2000)
    cohere = requests.post(f"{live_server}{prefix}/rerank", headers=headers, timeout=10,
                           json={"model": "cohere-rerank", "query": "dogs", "documents": documents * 50})
    assert cohere.json()["meta"]["billed_units"]["search_units"] == 1  # billed as reported, not by 150 documents
    assert (last_row().units, spent(account)) == (1, 4000)


@both_databases
def test_an_empty_balance_is_a_402_and_the_upstream_never_called(live_server, make_key, media):
    client = sdk(live_server, make_key("broke"))
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(model="whisper", file=("a.wav", wav_file(1), "audio/wav"))
    assert refused.value.status_code == 402
    with pytest.raises(openai.APIStatusError) as refused:
        client.images.generate(model="image-model", prompt="a cat")
    assert refused.value.status_code == 402
    assert media.requests == []
    wait_until(lambda: has_row(status=402, endpoint="images/generations", cost=0), "the 402's usage row")


def test_a_failed_deployment_is_retried_on_the_next_with_the_upload_read_again(live_server, funded, media, media2):
    secret, account = funded
    media.fail_next = 5
    audio = wav_file(3)
    answer = sdk(live_server, secret).audio.transcriptions.create(model="twice-whisper",
                                                                 file=("a.wav", audio, "audio/wav"))
    assert answer.text == TRANSCRIPT
    assert media.requests and media2.requests[-1]["files"]["file"] == ("a.wav", len(audio))
    row = last_row()
    assert (row.deployment, row.attempts, row.status, row.cost, spent(account)) == ("second", 2, 200, 30_000, 30_000)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_bad_input_is_an_openai_shaped_error(client, funded, prefix):
    headers = {"Authorization": f"Bearer {funded[0]}"}

    def error_of(path, status, **request):
        answer = client.post(prefix + path, headers=headers, **request)
        assert answer.status_code == status, answer.get_data(as_text=True)
        error = answer.json["error"]
        assert error["message"] and error["type"] == "invalid_request_error"
        assert error["code"] == status if prefix == "/api/v1" else set(error) == {"message", "type", "param", "code"}
        return error

    wav = (io.BytesIO(wav_file(1)), "a.wav")
    assert error_of("/audio/transcriptions", 400, data={"model": "whisper"},
                    content_type="multipart/form-data")["param"] == "file"
    assert error_of("/audio/transcriptions", 400, data={"model": "whisper"})["code"] in (
        "invalid_content_type", 400)  # a form that is not multipart
    assert error_of("/audio/transcriptions", 400, data={"model": "whisper", "file": wav,
                                                         "response_format": "mp3"})["param"] == "response_format"
    assert error_of("/audio/translations", 404, data={"model": "nope", "file": (io.BytesIO(wav_file(1)), "a.wav")})
    wait_until(lambda: has_row(status=404, model="nope"), "the refused request's usage row")  # queued, not awaited
    assert error_of("/audio/transcriptions", 400, data={"model": "whisper", "stream": "true", "file": (
        io.BytesIO(wav_file(1)), "a.wav")})["param"] == "stream"
    assert error_of("/images/generations", 400, json={"model": "image-model", "prompt": "x", "stream": True}
                    )["param"] == "stream"
    assert error_of("/images/edits", 400, json={"model": "image-model", "prompt": "x"})["message"]
    assert error_of("/images/generations", 400, json={"model": "image-model"})["param"] == "prompt"
    assert error_of("/images/generations", 400, json={"model": "image-model", "prompt": "x", "n": 11})["param"] == "n"
    assert error_of("/images/generations", 404, json={"model": "nope", "prompt": "x"})
    assert error_of("/audio/speech", 400, json={"model": "tts", "voice": "alloy"})["param"] == "input"
    assert error_of("/moderations", 400, json={"model": "moderation"})["param"] == "input"
    assert error_of("/rerank", 400, json={"model": "reranker", "query": "q"})["param"] == "documents"


def test_azure_serves_audio_at_its_deployment_url(live_server, funded, media2, monkeypatch):
    monkeypatch.setenv("AZURE_TEST_KEY", "azure-secret")
    secret, account = funded
    answer = sdk(live_server, secret).audio.transcriptions.create(model="azure-whisper",
                                                                 file=("a.wav", wav_file(2), "audio/wav"))
    assert answer.text == TRANSCRIPT
    sent = media2.requests[-1]
    assert (sent["path"], sent["deployment"], sent["query"]) == (
        "audio/transcriptions", "whisper-deploy", "api-version=2024-10-21")
    assert sent["api_key"] == "azure-secret" and sent["authorization"] is None
    assert spent(account) == 20_000


@pytest.mark.parametrize("model", ["claude", "azure-moderation"])
def test_a_provider_without_the_route_is_a_400_naming_the_model(client, funded, model):
    answer = client.post("/v1/moderations", headers={"Authorization": f"Bearer {funded[0]}"},
                         json={"model": model, "input": "hi"})
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "unsupported_endpoint" and repr(model) in answer.json["error"]["message"]


def test_a_form_field_past_the_form_memory_limit_is_a_413_in_dialect(client, funded):
    answer = client.post("/api/v1/images/edits", headers={"Authorization": f"Bearer {funded[0]}"},
                         data={"model": "image-model", "prompt": "x" * 600_000,
                               "image": (io.BytesIO(PNG_PIXEL), "a.png")})
    assert answer.status_code == 413 and answer.json["error"]["code"] == 413


GUARDED = {
    "emails": {"type": "pii", "action": "redact", "detectors": ["email"], "default": True, "stages": ["input"]},
    "no-secrets": {"type": "regex", "default": True, "stages": ["input"],
                   "patterns": [{"name": "secret", "pattern": "top-secret"}]},
}


def test_the_text_a_model_reads_goes_through_the_input_guardrails(media_settings, make_app, funded, media):
    client = make_app(media_settings(guardrails=GUARDED)).test_client()
    headers = {"Authorization": f"Bearer {funded[0]}"}
    email = "ann@example.com"

    def sent(path: str, **request) -> dict:
        answer = client.post("/v1" + path, headers=headers, **request)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert media.requests[-1]["path"] == path.lstrip("/")
        return media.requests[-1]["fields"]

    prompt = sent("/images/generations", json={"model": "image-model", "prompt": f"a cat for {email}"})["prompt"]
    assert prompt.startswith("a cat for ") and email not in prompt
    form = sent("/audio/transcriptions", content_type="multipart/form-data", data={
        "model": "whisper", "prompt": f"names: {email}", "file": (io.BytesIO(wav_file(1)), "a.wav")})
    assert form["prompt"].startswith("names: ") and email not in form["prompt"] and form["model"] == "whisper-1"
    reranked = sent("/rerank", json={"model": "reranker", "query": email, "documents": [f"{email} wrote", "dogs"]})
    assert email not in reranked["query"] and email not in reranked["documents"][0]
    assert reranked["documents"][1] == "dogs"
    assert sent("/moderations", json={"model": "moderation", "input": email})["input"] == email  # judged, not checked
    calls = len(media.requests)
    blocked = client.post("/v1/audio/speech", headers=headers,
                          json={"model": "tts", "input": "the top-secret plan", "voice": "alloy"})
    assert blocked.status_code == 400 and blocked.json["error"]["code"] == "content_policy_violation"
    assert len(media.requests) == calls  # never sent upstream
