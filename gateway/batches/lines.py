"""Pure rules of batch lines: what an input line must be, and the output and error lines OpenAI writes.

Input line: `{"custom_id", "method": "POST", "url", "body"}`, `url` the batch's endpoint. Output line:
`{"id": "batch_req_...", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`; a
line answered with an error status goes to the error file in the same shape (its body OpenAI's error
body), and a line that never got an answer (the batch expired or was cancelled first) has `response: null`
and `error: {"code", "message"}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ENDPOINTS = {"/v1/chat/completions": "chat/completions", "/v1/completions": "completions",
             "/v1/embeddings": "embeddings"}
MAX_CUSTOM_ID = 512


@dataclass(frozen=True)
class InputLine:
    """One valid line of an input file."""

    number: int  # 0-based position in the file
    custom_id: str
    body: dict[str, Any]


class LineError(ValueError):
    """Why an input line is invalid: OpenAI's batch error (`code`, `message`, `param`, `line`, 1-based)."""

    def __init__(self, code: str, message: str, number: int, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.number, self.param = code, message, number, param

    def as_json(self) -> dict[str, Any]:
        """The entry of the batch's `errors.data`."""
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.number + 1}


def parse_line(raw: bytes, number: int, endpoint: str) -> InputLine:
    """One input line, checked (LineError says why not)."""
    try:
        line = json.loads(raw)
    except ValueError:
        raise LineError("invalid_json_line", "This line is not parseable as valid JSON.", number) from None
    if not isinstance(line, dict):
        raise LineError("invalid_json_line", "This line is not a JSON object.", number)
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise LineError("missing_required_parameter", "custom_id must be a non-empty string.", number, "custom_id")
    if line.get("method") != "POST":
        raise LineError("invalid_method", "The only method supported is POST.", number, "method")
    if line.get("url") != endpoint:
        raise LineError("invalid_url", f"The url of every line must be the batch's endpoint, {endpoint}.",
                        number, "url")
    body = line.get("body")
    if not isinstance(body, dict):
        raise LineError("invalid_request", "body must be a JSON object.", number, "body")
    if not isinstance(body.get("model"), str):
        raise LineError("missing_required_parameter", "body.model must be set.", number, "body.model")
    return InputLine(number, custom_id, body)


def output_line(line_id: str, custom_id: str, status: int, request_id: str, body: dict[str, Any]) -> str:
    """The line of an answer (the output file for a 200, else the error file)."""
    return json.dumps({"id": line_id, "custom_id": custom_id,
                       "response": {"status_code": status, "request_id": request_id, "body": body},
                       "error": None}, separators=(",", ":"))


def unanswered_line(line_id: str, custom_id: str, code: str, message: str) -> str:
    """The error-file line of a request that was never sent (`batch_expired`, `batch_cancelled`)."""
    return json.dumps({"id": line_id, "custom_id": custom_id, "response": None,
                       "error": {"code": code, "message": message}}, separators=(",", ":"))
