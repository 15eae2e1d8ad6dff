"""A loopback fake of OpenAI's media routes (images, audio, moderations) and a Cohere/vLLM-style `/rerank`.

FakeMedia serves them on a server of its own; tests.fake_upstream.FakeUpstream serves them too (MediaRoutes).

Answers follow OpenAI's reference shapes; `fail_next` makes the next requests a 500 (retries), and
`requests` records what each request carried (its form fields, its files' names and sizes, whether it
came chunked), so tests can see what the gateway sent upstream.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from werkzeug.formparser import parse_form_data

PNG_PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
SPEECH_CHUNKS = [b"ID3" + bytes(61), bytes(range(256)) * 64, b"\xff\xfb" * 1000]  # sent one chunk at a time
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
RELEASE_WAIT_S = 60.0  # a held speech answer goes on by itself after this, whatever the test did
IMAGE_TOKENS = {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210,
                "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}}


def wav_file(seconds: float, rate: int = 8000) -> bytes:
    """A silent 16-bit mono WAV file of this duration."""
    data = bytes(int(seconds * rate) * 2)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


def wav_duration(raw: bytes) -> float:
    """A WAV file's duration from its header (the files wav_file makes)."""
    if len(raw) < 44 or raw[:4] != b"RIFF":
        return 1.0  # not a WAV file: a second
    rate = struct.unpack_from("<I", raw, 28)[0] or 1
    return struct.unpack_from("<I", raw, 40)[0] / rate


MEDIA_PATHS = ("images/", "audio/", "moderations", "rerank")
AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/(.+)$")


class MediaRoutes:
    """The media routes' answers, for any loopback server's handler (FakeMedia's, FakeUpstream's)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.speech_release: threading.Event | None = None  # when set: speech waits for it after its first chunk
        self.speech_released: bool | None = None  # whether it was released (False: it gave up waiting)
        self._lock = threading.Lock()

    @staticmethod
    def serves(path: str) -> bool:
        """Whether a request path (`/v1/images/generations`) is one of the media routes."""
        path = urlsplit(path).path
        azure = AZURE_PATH.match(path)
        return (azure.group(2) if azure else path.removeprefix("/v1/")).startswith(MEDIA_PATHS)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Read the request (JSON or multipart), record it, and answer as OpenAI (or a reranker) would."""
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        content_type = handler.headers.get("Content-Type", "")
        fields, files = {}, {}
        if content_type.startswith("multipart/form-data"):
            _, form, uploaded = parse_form_data({"wsgi.input": io.BytesIO(raw), "CONTENT_LENGTH": str(len(raw)),
                                                 "CONTENT_TYPE": content_type, "REQUEST_METHOD": "POST"})
            fields = dict(form)
            files = {name: (item.filename, item.read()) for name, item in uploaded.items(multi=True)}
        else:
            fields = json.loads(raw or b"{}")
        url = urlsplit(handler.path)
        azure = AZURE_PATH.match(url.path)  # Azure OpenAI's deployment URL scheme
        path = azure.group(2) if azure else url.path.removeprefix("/v1/")
        with self._lock:
            self.requests.append({"path": path, "deployment": azure.group(1) if azure else None, "query": url.query,
                                  "api_key": handler.headers.get("api-key"), "fields": fields, "files": {k: (v[0], len(v[1])) for k, v in
                                                                              files.items()},
                                  "chunked": "chunked" in handler.headers.get("Transfer-Encoding", ""),
                                  "authorization": handler.headers.get("Authorization")})
            failing = self.fail_next > 0
            self.fail_next -= 1 if failing else 0
        if failing:
            return self._send(handler, 500, {"error": {"message": "fake failure", "type": "server_error"}})
        if path == "audio/speech":
            return self._speech(handler)
        status, answer = self.answer(path, fields, files)
        self._send(handler, status, answer)

    def answer(self, path: str, fields: dict[str, Any], files: dict[str, tuple[str, bytes]]) -> tuple[int, Any]:
        """The status and answer (a JSON object, or text) of one route."""
        model = str(fields.get("model"))
        count = fields.get("n") if isinstance(fields.get("n"), int) else int(str(fields.get("n") or 1)) if str(
            fields.get("n") or 1).isdigit() else 1
        if path.startswith("images/"):
            answer: dict[str, Any] = {"created": 1700000000, "data": [
                {"b64_json": base64.b64encode(PNG_PIXEL).decode()} for _ in range(count)]}
            if "image-1" in model:
                answer["usage"] = IMAGE_TOKENS
            return 200, answer
        if path in ("audio/transcriptions", "audio/translations"):
            if "file" not in files:
                return 400, {"error": {"message": "file is required", "type": "invalid_request_error"}}
            seconds = wav_duration(files["file"][1])
            return 200, transcript(fields.get("response_format") or "json", seconds, path)
        if path == "moderations":
            return 200, {"id": "modr-fake", "model": model, "results": [{
                "flagged": False, "categories": {"violence": False}, "category_scores": {"violence": 0.01},
                "category_applied_input_types": {"violence": ["text"]}}]}
        if path == "rerank":
            return 200, reranked(fields, "cohere" in model)
        return 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}

    def _speech(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "audio/mpeg")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for index, chunk in enumerate(SPEECH_CHUNKS):
            if index == 1 and self.speech_release is not None:
                self.speech_released = self.speech_release.wait(RELEASE_WAIT_S)
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, answer: Any) -> None:
        body = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain; charset=utf-8" if isinstance(answer, str) else
                            "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


class FakeMedia(MediaRoutes):
    """The media routes on a server of their own; `base_url` ends in /v1."""

    def __init__(self) -> None:
        super().__init__()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake.handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def start(self) -> FakeMedia:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def transcript(answer_format: str, seconds: float, path: str) -> Any:
    """A transcription's answer in `answer_format` (OpenAI's: json with usage seconds, text, srt, vtt, verbose_json)."""
    if answer_format == "text":
        return TRANSCRIPT + "\n"
    if answer_format == "srt":
        return f"1\n00:00:00,000 --> 00:00:0{int(seconds)},000\n{TRANSCRIPT}\n\n"
    if answer_format == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> 00:00:0{int(seconds)}.000\n{TRANSCRIPT}\n\n"
    if answer_format == "verbose_json":
        return {"task": "transcribe" if path == "audio/transcriptions" else "translate", "language": "english",
                "duration": seconds, "text": TRANSCRIPT, "segments": [{
                    "id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": TRANSCRIPT, "tokens": [50364, 440],
                    "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01}],
                "usage": {"type": "duration", "seconds": seconds}}
    answer: dict[str, Any] = {"text": TRANSCRIPT}
    if path == "audio/transcriptions":
        answer["usage"] = {"type": "duration", "seconds": seconds}
    return answer


def reranked(body: dict[str, Any], cohere: bool) -> dict[str, Any]:
    """A rerank answer: documents by how many query words they hold, Cohere's shape or vLLM's."""
    query = set(str(body.get("query")).lower().split())
    documents = [doc.get("text") if isinstance(doc, dict) else doc for doc in body.get("documents") or []]
    scores = sorted(((len(query & set(doc.lower().split())) / (len(query) or 1), index)
                     for index, doc in enumerate(documents)), reverse=True)[:body.get("top_n") or len(documents)]
    if cohere:
        return {"id": "rerank-fake", "results": [{"index": index, "relevance_score": score} for score, index in scores],
                "meta": {"billed_units": {"search_units": 1}}}
    return {"id": "rerank-fake", "model": body.get("model"), "usage": {"total_tokens": 42},
            "results": [{"index": index, "document": {"text": documents[index]}, "relevance_score": score}
                        for score, index in scores]}
