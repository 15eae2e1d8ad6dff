"""Spreads a provider's requests over its copies (`[providers.X] copies`): the least busy one first.

Each gunicorn worker counts the requests it has in flight on each copy and sends the next one to
a copy with the fewest, taking turns among equally busy copies. A copy such as llama-cpp-python's
server answers one request at a time, so a short request goes to an idle copy instead of queueing
behind a long one.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence


class CopyBalancer:
    """Picks the copy (base URL) for the next request; the caller releases it when the request ends."""

    def __init__(self, base_urls: Sequence[str]) -> None:
        self.base_urls = list(base_urls)
        self._in_flight = [0] * len(self.base_urls)
        self._turn = random.randrange(len(self.base_urls))  # workers start on different copies
        self._lock = threading.Lock()

    def in_flight(self) -> list[int]:
        """Requests in flight on each copy, in base_urls order."""
        with self._lock:
            return list(self._in_flight)

    def acquire(self) -> tuple[str, Callable[[], None]]:
        """The base URL of the least busy copy (turns among ties) and a release() to call once it is done."""
        with self._lock:
            count = len(self.base_urls)
            order = [(self._turn + offset) % count for offset in range(count)]
            index = min(order, key=lambda candidate: self._in_flight[candidate])
            self._in_flight[index] += 1
            self._turn = (index + 1) % count
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._in_flight[index] -= 1

        return self.base_urls[index], release
