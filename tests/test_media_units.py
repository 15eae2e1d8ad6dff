"""The pure parts of the media endpoints: units read from requests and answers, their prices, the upload body."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from werkzeug.formparser import parse_form_data

from gateway.accounting import media_units as units
from gateway.accounting.money import Price
from gateway.accounting.usage import Usage
from gateway.config import ModelSettings
from gateway.upstream.multipart import FilePart, MultipartBody
from tests.fake_media import wav_file


@pytest.mark.parametrize("size,quality,unit", [
    ("1024x1024", "hd", "image:1024x1024/hd"), ("1024x1024", None, "image:1024x1024"),
    ("1024x1024", "auto", "image:1024x1024"), ("auto", "high", "image"), (None, "hd", "image"),
    ("x" * 25, "hd", "image"), ("1024x1024", "h d", "image:1024x1024"), (512, "hd", "image"),
])
def test_image_units_are_qualified_by_plain_sizes_and_qualities(size, quality, unit):
    assert units.image_unit(size, quality) == unit


@pytest.mark.parametrize("head,seconds", [
    (wav_file(2.5), 2.5), (wav_file(0.5, rate=16000), 0.5), (wav_file(1)[:44], 1.0),
    (b"ID3" + bytes(100), None), (b"RIFF", None), (b"", None),
])
def test_a_wav_header_tells_the_duration(head, seconds):
    assert units.wav_seconds(head) == seconds


@pytest.mark.parametrize("answer,usage", [
    ({"text": "x", "usage": {"type": "duration", "seconds": 7}}, Usage(unit="audio_second", units=7.0)),
    ({"text": "x", "duration": 3.25}, Usage(unit="audio_second", units=3.25)),
    ({"text": "x", "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 45, "total_tokens": 59}},
     Usage(14, 45, unit="audio_second", units=0.0)),
    (None, Usage(estimated=True, unit="audio_second", units=60.0)),  # text, srt, vtt: the estimate
    ({"text": "x", "usage": {"type": "duration", "seconds": True}}, Usage(estimated=True, unit="audio_second",
                                                                           units=60.0)),
])
def test_audio_usage_is_what_the_answer_reports_else_the_estimate(answer, usage):
    assert units.audio_usage(answer, 60.0) == usage


def test_image_and_rerank_usage():
    answer = {"data": [{}, {}], "usage": {"input_tokens": 5, "output_tokens": 9, "total_tokens": 14}}
    assert units.image_usage(answer, "image:1024x1024") == Usage(5, 9, unit="image:1024x1024", units=2)
    assert units.rerank_usage({"meta": {"billed_units": {"search_units": 3}}}, 10).units == 3
    assert units.rerank_usage({"usage": {"total_tokens": 42}}, 250) == Usage(42, 0, unit="search_unit", units=3)
    assert units.search_units(0) == units.search_units(100) == 1


def test_unit_prices_fall_back_from_size_and_quality_to_the_model_price():
    model = ModelSettings(provider="p", image_price=0.04, image_prices={"1024x1024": 0.05, "1024x1024/hd": 0.08},
                          audio_price_per_minute=0.006, speech_price_per_kchar=0.0155, search_unit_price=0.002)
    price = Price.of(model)
    assert price.unit_price("image:1024x1024/hd") == Decimal("80000.00")
    assert price.unit_price("image:1024x1024/standard") == price.unit_price("image:1024x1024") == 50_000
    assert price.unit_price("image:512x512") == price.unit_price("image") == 40_000
    assert price.cost(Usage(unit="audio_second", units=61)) == 6100  # 0.006 a minute, by the second
    assert price.cost(Usage(unit="speech_character", units=1001)) == 15516  # 15,515.5 rounded up once
    assert price.cost(Usage(1000, 0, unit="search_unit", units=2)) == 4000
    assert price.unit_price("moderation") == 0 and not price.free
    assert Price.of(ModelSettings(provider="p")).free


def test_the_upload_body_is_what_werkzeug_reads_back_and_reads_again_from_the_start():
    image = io.BytesIO(b"\x89PNG" + bytes(200_000))
    body = MultipartBody([("model", "public"), ("prompt", 'a "quoted"\r\nprompt')],
                         [FilePart("image[]", 'cat "1".png', "image/png", image)]).with_field("model", "upstream")
    first, second = b"".join(body), b"".join(body)
    assert first == second and len(first) == len(body)
    assert max(len(piece) for piece in body) <= 65536
    _, form, files = parse_form_data({"wsgi.input": io.BytesIO(first), "CONTENT_LENGTH": str(len(first)),
                                      "CONTENT_TYPE": body.content_type, "REQUEST_METHOD": "POST"})
    assert form.to_dict() == {"model": "upstream", "prompt": 'a "quoted"\r\nprompt'}
    assert files["image[]"].read() == image.getvalue()
