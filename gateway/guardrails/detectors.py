"""The pii detectors (pure): each a name, one compiled pattern, a validator and a placeholder.

A pattern finds candidates; the validator (Luhn for cards, mod 97 for IBANs, the SSA's rules for
SSNs, `ipaddress` for IPv6, a digit count for phones) refuses the ones that only look right. Every
pattern's matches are bounded in length (a private key is found by its header line; a JWT may be
long, see gateway.guardrails.window), and a cheap substring test skips a pattern on texts that
cannot hold a match.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.guardrails.verdicts import Hit

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class Detector:
    """One pii detector: `prefilter` says whether a text may hold a match at all (cheap), `valid` checks one."""

    name: str
    pattern: re.Pattern[str]
    placeholder: str
    valid: Callable[[str], bool]
    prefilter: Callable[[str], bool]


def luhn_valid(candidate: str) -> bool:
    """A card number's Luhn checksum (spaces and dashes ignored); all zeros is no card."""
    digits = [int(char) for char in candidate if char in DIGITS]
    if not any(digits):
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """An IBAN's country length and its ISO 13616 mod-97 check digits."""
    compact = candidate.replace(" ", "")
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def phone_valid(candidate: str) -> bool:
    """An E.164 number has 8 to 15 digits; a national one with a trunk 0 has 9 to 12; a US one has 10."""
    count = sum(char in DIGITS for char in candidate)
    if candidate.startswith("+"):
        return 8 <= count <= 15
    if candidate.startswith("0"):
        return 9 <= count <= 12
    return count == 10


def ipv6_valid(candidate: str) -> bool:
    """What `ipaddress` accepts as IPv6, with at least one hex digit (not a bare `::`)."""
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return candidate.strip(":") != ""


def secret_valid(candidate: str) -> bool:
    """An `sk-` key body mixes upper case, lower case and digits (a hyphenated word like sk-learn-... does not)."""
    if not candidate.startswith("sk"):
        return True
    body = candidate[3:]
    return any(char.isdigit() for char in body) and any(char.isupper() for char in body) and any(
        char.islower() for char in body)


def always(_candidate: str) -> bool:
    """No validator beyond the pattern."""
    return True


def has_digits(count: int) -> Callable[[str], bool]:
    """A prefilter: the text holds at least `count` digits (counted only as far as needed)."""
    def prefilter(text: str) -> bool:
        seen = 0
        for char in text:
            if char in DIGITS:
                seen += 1
                if seen >= count:
                    return True
        return False
    return prefilter


def contains(*needles: str) -> Callable[[str], bool]:
    """A prefilter: the text holds one of these substrings."""
    return lambda text: any(needle in text for needle in needles)


def ip_prefilter(text: str) -> bool:
    """IPv4 needs a dot, IPv6 two colons."""
    return "." in text or text.count(":") >= 2


OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
PATTERNS = {
    "email": r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
             r"[A-Za-z]{2,24}(?![\w-])",
    "phone": r"(?<![\w+])(?<!\d[ .\-/])(?:"
             r"\+\d{1,3}(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-]?\d{1,5}){1,6}"   # +44 20 7946 0958, +1 (555) 123-4567
             r"|\(\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}"                         # (555) 123-4567
             r"|\d{3}[.\-]\d{3}[.\-]\d{4}"                                # 555-123-4567
             r"|0\d{1,4}(?:[ .\-/]\d{2,8}){1,4}"                          # 020 7946 0958, 06 12 34 56 78
             r")(?!\w|[ .\-/]?\d)",
    "card": r"(?<![\w-])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![\w-]|[ -]\d)",
    "iban": r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: (?=[A-Z]{0,3}\d)[A-Z0-9]{1,4})?)"
            r"(?![A-Za-z0-9])",
    "us_ssn": r"(?<![\w-])(?<!\d )(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-]|[- ]\d)",
    "ip": rf"(?<![\w.])(?:{OCTET}\.){{3}}{OCTET}(?!\w|\.\d)"
          r"|(?<![\w:.])(?=[0-9A-Fa-f]{0,4}::?[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}"
          r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?![\w:]|\.\d)",
    "secret": r"(?<![\w-])sk-(?:proj-|ant-(?:api\d\d-)?|or-v1-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,256}(?![\w-])"
              r"|(?<![\w-])sk_(?:live|test)_[A-Za-z0-9]{16,128}(?!\w)"
              r"|(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
              r"|-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
              r"|(?<![\w-])eyJ[A-Za-z0-9_-]{5,4096}\.eyJ[A-Za-z0-9_-]{5,4096}\.[A-Za-z0-9_-]{10,4096}(?![\w-])",
}


def ip_valid(candidate: str) -> bool:
    """IPv4 is checked by the pattern (octets of 0-255); IPv6 by `ipaddress`."""
    return ":" not in candidate or ipv6_valid(candidate)


DETECTORS = {
    detector.name: detector for detector in (
        Detector("email", re.compile(PATTERNS["email"]), "[EMAIL]", always, contains("@")),
        Detector("phone", re.compile(PATTERNS["phone"]), "[PHONE]", phone_valid, has_digits(8)),
        Detector("card", re.compile(PATTERNS["card"]), "[CARD]", luhn_valid, has_digits(13)),
        Detector("iban", re.compile(PATTERNS["iban"]), "[IBAN]", iban_valid, has_digits(4)),
        Detector("us_ssn", re.compile(PATTERNS["us_ssn"]), "[SSN]", always, has_digits(9)),
        Detector("ip", re.compile(PATTERNS["ip"]), "[IP]", ip_valid, ip_prefilter),
        Detector("secret", re.compile(PATTERNS["secret"]), "[SECRET]", secret_valid,
                 contains("sk-", "sk_", "AKIA", "ASIA", "PRIVATE KEY", "eyJ")),
    )
}


class DetectorScanner:
    """One detector as a scanner of a pii guardrail, with the guardrail's action."""

    def __init__(self, detector: Detector, action: str) -> None:
        self.detector = detector
        self.action = action

    def scan(self, text: str, pos: int = 0) -> list[Hit]:
        """Every candidate from `pos` on, each with its validator's answer."""
        detector = self.detector
        if not detector.prefilter(text[pos:] if pos else text):
            return []
        return [Hit(match.start(), match.end(), detector.name, detector.valid(match.group()), self.action,
                    detector.placeholder) for match in detector.pattern.finditer(text, pos)]


def find(name: str, text: str) -> list[str]:
    """The valid matches of one detector in a text (for tests and the bench)."""
    return [text[hit.start:hit.end] for hit in DetectorScanner(DETECTORS[name], "log").scan(text) if hit.valid]


def redact(text: str, names: tuple[str, ...] = tuple(DETECTORS)) -> str:
    """The text with every match of these detectors replaced by its placeholder."""
    from gateway.guardrails.verdicts import ScanCheck
    check = ScanCheck(tuple(DetectorScanner(DETECTORS[name], "redact") for name in names))
    verdict = check(text, "input", None)
    return verdict.text if verdict.text is not None else text
