"""The spool file and its reader (gateway.serving.spool): the spool's bytes, then the socket's; deleted on close."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from gateway.serving.spool import PREFIX, SpooledUnreader, open_spool


def spooled(folder: Path, data: bytes) -> tuple[SpooledUnreader, socket.socket, str]:
    """A reader over a spool holding `data`, the peer of its socket, and the spool's file name."""
    ours, peer = socket.socketpair()
    spool = open_spool(str(folder))
    spool.write(data)
    spool.seek(0)
    return SpooledUnreader(ours, spool), peer, spool.name


def test_reads_the_head_then_the_spool_then_the_socket(tmp_path: Path) -> None:
    reader, peer, name = spooled(tmp_path, b"body" * 1000)
    assert Path(name).parent == tmp_path and Path(name).name.startswith(PREFIX)
    reader.unread(b"HEAD\r\n\r\n")
    peer.sendall(b"NEXT")
    assert reader.read(8) == b"HEAD\r\n\r\n"
    assert reader.read(4000) == b"body" * 1000
    assert reader.read(4) == b"NEXT"
    assert reader.close_spool(keep_rest=True) == b""
    assert not os.path.exists(name)
    peer.close()
    reader.sock.close()


def test_closing_keeps_the_spools_rest_only_when_kept_alive(tmp_path: Path) -> None:
    """Kept alive, what followed the request in the spool is read-ahead; closing, the spool's unread rest is dropped."""
    data = b"x" * 20_000 + b"GET / HTTP/1.1\r\n\r\n"
    for keep_rest in (True, False):
        reader, peer, name = spooled(tmp_path, data)
        assert reader.read(10) == b"x" * 10  # gunicorn keeps the rest of the chunk it read buffered
        read_ahead = reader.close_spool(keep_rest=keep_rest)
        assert read_ahead == data[10:] if keep_rest else data[10:].startswith(read_ahead) and len(read_ahead) < 20_000
        assert not os.path.exists(name) and not list(tmp_path.iterdir())
        peer.close()
        reader.sock.close()


def test_the_system_temp_folder_by_default() -> None:
    spool = open_spool("")
    try:
        assert Path(spool.name).name.startswith(PREFIX)
    finally:
        spool.close()
    assert not os.path.exists(spool.name)
