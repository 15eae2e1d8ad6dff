"""What the guardrails add to a request: the `pii` input check on a 2 KB prompt, per detector, and the rest.

    python -m bench.guardrails            # about 20 seconds
    python -m bench.guardrails --quick    # a few seconds

Target (issue 29): the `pii` input check (every detector on, action redact) adds at most 200 us p50 on a
2 KB prompt. Measured in process, on the pure check itself (`Guardrails.check_body` over a chat body, as the
request path calls it), with nothing else running: wall time and the thread's CPU of each call.

The kinds of call, taking turns in a shuffled order each cycle so drift falls on all alike:

- `pii, clean 2 KB`: a prompt of ordinary prose (a review request with a few numbers): the common case;
- `pii, 2 KB of numbers`: prose dense with years, prices, ids, versions, dates and times (what only looks
  like pii: a fifth of its characters are digits), the slow case;
- `pii, 2 KB with pii`: the same prompt with an email, a phone, a card, an IBAN, an SSN, an IP and a key
  in it, each redacted;
- `walk only`: a pii guardrail with no detector on, on the clean prompt: the per-request work around the
  detectors (`guardrails_for`, the body's texts, the verdict);
- `detector X`: a pii guardrail with only that detector, on the clean prompt; its own cost is the row less
  `walk only` (the last column);
- `regex (1 pattern)`: an injection deny list on the clean prompt;
- `no guardrails`: `NO_GUARDRAILS.check_body` and `active()`, the path with none attached (its row is
  mostly the cost of reading the two clocks, which every row includes);
- `stream, 2 KB in 4-char deltas`: the pii guardrail as a StreamCheck over a streamed answer, per answer.

Prints a Markdown report and writes it to bench/GUARDRAILS_RESULTS.md (`--output`).
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

# `python bench/guardrails.py` from anywhere: the repo root instead of bench/ on the path.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import machine  # noqa: E402 - needs the sys.path line
from bench.report import fmt, table  # noqa: E402
from bench.stats import percentile  # noqa: E402
from gateway.config import PII_DETECTORS, Settings, build_settings  # noqa: E402
from gateway.guardrails import NO_GUARDRAILS, Guardrails, guardrails_for  # noqa: E402

TARGET_US = 200.0
PROMPT_CHARS = 2048
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "GUARDRAILS_RESULTS.md"
PROSE = ("Please review the pull request below and summarise what it changes. The service reads its settings "
         "at start, checks each table, and stops with a message naming the key when one is wrong; the new code "
         "adds a section for retries, with a default of 2 and a budget of 30 seconds. Tell me whether the tests "
         "cover the error paths, whether the names read well, and what a newcomer would find confusing. ")
NUMBERS = ("In 2024 the team shipped version 3.12.1 of the service, and the order 123456789 arrived at 12:30:45 "
         "for $1,299.00 (about 1.299,00 EUR). Revenue grew 14% over 2023, to 48,500 units in Q3; see section "
         "4.2.1 and table 7. The meeting on 05.12.2024 covered the roadmap, the on-call rota and the budget. ")
PII = ("Write to jane.doe@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, IBAN "
       "DE89 3704 0044 0532 0130 00, SSN 123-45-6789, from 192.168.10.20 with key "
       "sk-proj-AbC123xyz456DEF789ghi012JKL. ")
Sample = tuple[float, float]  # (wall us, thread CPU us)


def prompt(with_pii: bool, prose: str = PROSE) -> str:
    """A 2 KB prompt: prose, with the pii sentence in the middle when asked."""
    text = (prose * (PROMPT_CHARS // len(prose) + 1))
    if with_pii:
        middle = PROMPT_CHARS // 2
        text = text[:middle] + " " + PII + text[middle:]
    return text[:PROMPT_CHARS]


def body(text: str) -> dict:
    """A chat request's body around the prompt."""
    return {"model": "m", "messages": [{"role": "system", "content": "You are helpful."},
                                       {"role": "user", "content": text}], "max_tokens": 64}


def configured(table_: dict) -> Settings:
    """A configuration whose one guardrail is a default on input and output."""
    return build_settings({"guardrails": {"g": {"default": True, "stages": ["input", "output"], **table_}}})


def guardrails(settings: Settings) -> Guardrails:
    """A request's guardrails, as a request's face gets them."""
    return guardrails_for(settings, model="m", profile=None)


def kinds() -> dict[str, Callable[[], object]]:
    """Each kind's one call (a fresh Guardrails per call, as per request)."""
    clean, dirty, numbers = body(prompt(False)), body(prompt(True)), body(prompt(False, NUMBERS))
    pii = {"type": "pii", "action": "redact"}
    settings_of = {name: configured(table_) for name, table_ in (
        ("pii", pii), *((f"detector {name}", {**pii, "detectors": [name]}) for name in PII_DETECTORS),
        ("walk", {**pii, "detectors": []}),
        ("regex", {"type": "regex", "patterns": [{"name": "injection",
                                                  "pattern": "(?i)ignore (all )?previous instructions"}]}))}

    def check(name: str, request: dict) -> Callable[[], object]:
        settings = settings_of[name]
        return lambda: guardrails(settings).check_body("chat", request)

    answer = prompt(True)
    deltas = [answer[index:index + 4] for index in range(0, len(answer), 4)]

    def stream() -> str:
        checker = guardrails(settings_of["pii"]).stream("output")
        return "".join(checker.feed(delta) for delta in deltas) + checker.finish()

    def nothing() -> object:
        return NO_GUARDRAILS.active("input") or NO_GUARDRAILS.check_body("chat", clean)

    found = {"pii, clean 2 KB": check("pii", clean), "pii, 2 KB with pii": check("pii", dirty),
             "pii, 2 KB of numbers": check("pii", numbers)}
    found["walk only"] = check("walk", clean)
    found.update({f"detector {name}": check(f"detector {name}", clean) for name in PII_DETECTORS})
    found.update({"regex (1 pattern)": check("regex", clean), "no guardrails": nothing,
                  "stream, 2 KB in 4-char deltas": stream})
    return found


def measure(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[Sample]]:
    """Each kind `rounds` times, the kinds shuffled each cycle."""
    samples: dict[str, list[Sample]] = {name: [] for name in calls}
    order = list(calls)
    shuffle = random.Random(29)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for name in order:
            wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
            calls[name]()
            samples[name].append(((time.perf_counter_ns() - wall) / 1000, (time.thread_time_ns() - cpu) / 1000))
    return samples


def report(samples: dict[str, list[Sample]], started: datetime.datetime, seconds: float, rounds: int) -> str:
    """The Markdown report."""
    def p(name: str, index: int, fraction: float) -> float:
        return percentile([sample[index] for sample in samples[name]], fraction)

    headline = p("pii, clean 2 KB", 0, 0.5)
    with_pii = p("pii, 2 KB with pii", 0, 0.5)
    verdict = "PASS" if max(headline, with_pii) <= TARGET_US else "FAIL"
    walk = p("walk only", 1, 0.5)
    rows = [[f"`{name}`", fmt(p(name, 0, 0.5)), fmt(p(name, 0, 0.99)), fmt(p(name, 1, 0.5)), fmt(p(name, 1, 0.99)),
             fmt(p(name, 1, 0.5) - walk) if name.startswith("detector") else ""] for name in samples]
    lines = [
        "# Guardrails: what the checks add to a request",
        "",
        f"`python -m bench.guardrails` (started {started:%Y-%m-%d %H:%M} UTC, took {seconds:.0f} s). Target: the "
        f"`pii` input check adds at most {TARGET_US:.0f} us p50 on a {PROMPT_CHARS}-character prompt. The kinds "
        "of call are described in `bench/guardrails.py`'s docstring.",
        "",
        "## Target (this run)",
        "",
        *table(["measurement", "value", "target"], [
            ["`pii` input check, clean 2 KB prompt, wall p50 us", fmt(headline), verdict],
            ["`pii` input check, 2 KB prompt with 7 kinds of pii, wall p50 us", fmt(with_pii), verdict],
            ["`pii` input check, 2 KB of numbers, wall p50 us", fmt(p("pii, 2 KB of numbers", 0, 0.5)),
             "(no target)"]]),
        "",
        "## Every kind",
        "",
        f"{rounds:,} calls per kind after a warm-up, in process; wall time and the thread's CPU of one call.",
        "",
        *table(["kind", "wall p50 us", "wall p99 us", "CPU p50 us", "CPU p99 us", "CPU p50 over the walk"], rows),
        "",
        "## Machine",
        "",
        *(f"- {line}" for line in machine.describe({"guardrails": "in process"})),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the report goes")
    args = parser.parse_args(argv)
    rounds = 300 if args.quick else 3000
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    calls = kinds()
    measure(calls, rounds // 10)  # warm-up
    samples = measure(calls, rounds)
    text = report(samples, started, time.monotonic() - clock, rounds)
    print(text)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
