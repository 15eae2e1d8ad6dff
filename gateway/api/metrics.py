"""Per-process request counters rendered as Prometheus text."""

from __future__ import annotations

import threading
from collections import Counter


class RequestMetrics:
    """Counts requests and their total latency by endpoint and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._seconds: Counter[str] = Counter()

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        with self._lock:
            self._requests[(endpoint, status)] += 1
            self._seconds[endpoint] += seconds

    def render(self) -> str:
        """Prometheus exposition text."""
        with self._lock:
            lines = [
                "# HELP gateway_requests_total Requests handled by this worker.",
                "# TYPE gateway_requests_total counter",
            ]
            for (endpoint, status), count in sorted(self._requests.items()):
                lines.append(f'gateway_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
            lines += [
                "# HELP gateway_request_seconds_total Time spent answering, by endpoint.",
                "# TYPE gateway_request_seconds_total counter",
            ]
            for endpoint, seconds in sorted(self._seconds.items()):
                lines.append(f'gateway_request_seconds_total{{endpoint="{endpoint}"}} {seconds:.6f}')
        return "\n".join(lines) + "\n"
