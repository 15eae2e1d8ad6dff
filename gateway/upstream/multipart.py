"""A multipart/form-data body read from its parts in chunks: never held whole in memory, re-readable for retries.

`MultipartBody` is what the client sends an upstream for an upload (images edits and variations, audio
transcriptions and translations): its text fields, then its files, each file read `CHUNK_BYTES` at a
time from its (spooled) stream. It has a length, so `requests` sends a Content-Length rather than a
chunked body; every iteration starts the files again from their beginning (a retry on another deployment).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK_BYTES = 65536


@dataclass(frozen=True)
class FilePart:
    """One uploaded file: its form field, file name, content type and seekable stream."""

    field: str
    filename: str
    content_type: str
    stream: BinaryIO

    @property
    def size(self) -> int:
        """The file's length in bytes (its stream's end)."""
        position = self.stream.tell()
        size = self.stream.seek(0, os.SEEK_END)
        self.stream.seek(position)
        return size


def _quoted(value: str) -> str:
    """A header parameter value as browsers and requests send it: quotes and line breaks escaped."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartBody:
    """The parts of an upload as one multipart/form-data body, streamed."""

    def __init__(self, fields: list[tuple[str, str]], files: list[FilePart], boundary: str | None = None) -> None:
        self.fields = fields
        self.files = files
        self.boundary = boundary or secrets.token_hex(16)

    @property
    def content_type(self) -> str:
        """The Content-Type header naming the boundary."""
        return f"multipart/form-data; boundary={self.boundary}"

    def with_field(self, name: str, value: str) -> MultipartBody:
        """The same body with one text field set (added, or replacing every field of that name)."""
        fields = [(key, text) for key, text in self.fields if key != name] + [(name, value)]
        return MultipartBody(fields, self.files, self.boundary)

    def _field_head(self, name: str) -> bytes:
        return (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{_quoted(name)}\"\r\n\r\n").encode()

    def _file_head(self, part: FilePart) -> bytes:
        return (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{_quoted(part.field)}\"; "
                f"filename=\"{_quoted(part.filename)}\"\r\nContent-Type: {part.content_type}\r\n\r\n").encode()

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def __len__(self) -> int:
        fields = sum(len(self._field_head(name)) + len(value.encode()) + 2 for name, value in self.fields)
        files = sum(len(self._file_head(part)) + part.size + 2 for part in self.files)
        return fields + files + len(self._tail())

    def __iter__(self) -> Iterator[bytes]:
        for name, value in self.fields:
            yield self._field_head(name) + value.encode() + b"\r\n"
        for part in self.files:
            yield self._file_head(part)
            part.stream.seek(0)
            while chunk := part.stream.read(CHUNK_BYTES):
                yield chunk
            yield b"\r\n"
        yield self._tail()
