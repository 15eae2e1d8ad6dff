"""How fast a batch runs and what a file upload costs: a real `gateway serve` on SQLite and the tests' fake upstream.

    python -m bench.batches              # 2,000 lines, concurrency_per_account = 8, a 16 MiB file
    python -m bench.batches --lines 500 --concurrency 4 --file-mib 4

Prints the batch's lines per second (from create to `completed`, polled every 0.2 s), and the upload and
streamed download time of a file with the workers' peak RSS (VmHWM) before and after. Not a test: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from tests.fake_upstream import FakeUpstream
from tests.live_gateway import children, live_gateway


def peak_rss_kib(pids: list[int]) -> dict[int, int]:
    """Each process's peak resident set (VmHWM), KiB."""
    return {pid: int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if line.startswith("VmHWM")).split()[1]) for pid in pids}


def main() -> None:
    """Run the batch and the file round trip; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--file-mib", type=int, default=16)
    options = parser.parse_args()
    fake = FakeUpstream().start()
    folder = Path(tempfile.mkdtemp(prefix="bench-batches-"))
    config = (f'[database]\nurl = "sqlite:///{folder}/gateway.db"\n[providers.fake]\nbase_url = "{fake.base_url}"\n'
              f'[models.test-model]\nprovider = "fake"\n[server]\nmax_body_bytes = {(options.file_mib + 1) << 20}\n'
              f'[batches]\nconcurrency_per_account = {options.concurrency}\npoll_s = 0.2\n')
    try:
        with live_gateway(folder, config, workers=2, threads=8) as served:
            created = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--config",
                                      str(served.config), "--name", "bench", "--json"],
                                     capture_output=True, text=True, cwd=folder, check=True)
            client = openai.OpenAI(base_url=served.base_url + "/v1", api_key=json.loads(created.stdout)["key"])
            batch_figures(client, options.lines, options.concurrency)
            file_figures(client, children(served.process.pid), options.file_mib)
    finally:
        fake.stop()


def batch_figures(client: openai.OpenAI, count: int, concurrency: int) -> None:
    """One batch of `count` chat lines, from create to completed."""
    lines = "".join(json.dumps({"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "test-model", "messages": [{"role": "user", "content": f"q{n}"}]}})
                    + "\n" for n in range(count))
    upload = client.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    started = time.monotonic()
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    took = time.monotonic() - started
    print(f"{count} lines, concurrency {concurrency}: {batch.status} {batch.request_counts.model_dump()} "
          f"in {took:.1f} s ({count / took:.0f} lines/s)")


def file_figures(client: openai.OpenAI, workers: list[int], mib: int) -> None:
    """Upload a file of `mib` MiB, stream it back; time both, and the workers' peak RSS around them."""
    content = os.urandom(mib << 19).hex().encode()
    before = peak_rss_kib(workers)
    started = time.monotonic()
    stored = client.files.create(file=("big.jsonl", io.BytesIO(content)), purpose="batch")
    upload_s, started = time.monotonic() - started, time.monotonic()
    size = 0
    with client.files.with_streaming_response.content(stored.id) as answer:
        for piece in answer.iter_bytes(65536):
            size += len(piece)
    download_s = time.monotonic() - started
    print(f"{mib} MiB file: upload {upload_s:.2f} s, streamed download {download_s:.2f} s ({size} bytes); "
          f"workers' peak RSS KiB before {before}, after {peak_rss_kib(workers)}")


if __name__ == "__main__":
    main()
