"""The pii detectors (pure): each a name, one compiled pattern, a validator and a placeholder.

A pattern finds candidates; the validator (Luhn for cards, mod 97 for IBANs, the SSA's rules for
SSNs, `ipaddress` for IPv6, a digit count for phones) refuses the ones that only look right. Every
pattern's matches are bounded in length (a private key is its header, its base64 body and its
END line, at most 8 KB; a JWT at most 12 KB: a stream holds such a match back whole, see
gateway.guardrails.window), and a cheap substring test skips a pattern on texts that cannot hold
a match.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gateway.guardrails.verdicts import Hit, ScanCheck, choose_hits

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
    """One pii detector: its patterns, each with a prefilter (whether a text may hold a match at all, cheaply)."""

    name: str
    parts: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...]
    placeholder: str
    valid: Callable[[str], bool]


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
    """An E.164 number has 8 to 15 digits (after + or 00); a national one with a trunk 0 has 9 to 12; a US one 10."""
    count = sum(char in DIGITS for char in candidate)
    if candidate.startswith("+"):
        return 8 <= count <= 15
    if candidate.startswith("00"):
        return 10 <= count <= 17
    if candidate.startswith("0"):
        return 9 <= count <= 12
    return count == 10


def ip_valid(candidate: str) -> bool:
    """IPv4: four octets of 0-255 without leading zeros; IPv6: what `ipaddress` accepts (not a bare `::`)."""
    if ":" not in candidate:
        return all(octet == "0" or (octet[0] != "0" and int(octet) <= 255) for octet in candidate.split("."))
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


def always(_text: str) -> bool:
    """No prefilter or validator beyond the pattern."""
    return True


def contains(*needles: str) -> Callable[[str], bool]:
    """A prefilter: the text holds one of these substrings."""
    return lambda text: any(needle in text for needle in needles)


def close_colons(text: str) -> bool:
    """IPv6's prefilter: two colons at most 5 characters apart."""
    index = text.find(":")
    while index >= 0:
        following = text.find(":", index + 1, index + 6)
        if following >= 0:
            return True
        index = text.find(":", index + 1)
    return False


# Each pattern starts with a character class and checks what precedes it with a look-behind after that
# first character: the regex engine then skips to candidate characters in C instead of trying every position.
PATTERNS = {
    "email": r"[A-Za-z0-9._%+-](?<![\w.%+-].)[A-Za-z0-9._%+-]{0,63}@"
             r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])",
    "phone": r"[+(0-9](?<![\w+].)(?<![0-9][ .\-/].)(?:"
             r"(?<=\+)[0-9]{1,3}(?:[ .\-]?\([0-9]{1,4}\))?(?:[ .\-]?[0-9]{1,5}){1,6}"  # +44 20 7946 0958
             r"|(?<=\()[0-9]{3}\)[ .\-]?[0-9]{3}[ .\-][0-9]{4}"                        # (555) 123-4567
             r"|(?<=[0-9])[0-9]{2}[.\-][0-9]{3}[.\-][0-9]{4}"                            # 555-123-4567
             r"|(?<=0)[0-9]{1,4}(?:[ .\-/][0-9]{2,8}){1,4}"                              # 020 7946 0958
             r")(?!\w|[ .\-/]?[0-9])",
    "card": r"[0-9](?<![\w-].)(?<![0-9][ -].)(?:[ -]?[0-9]){12,18}(?![\w-]|[ -][0-9])",
    "iban": r"[A-Z](?<![A-Za-z0-9].)[A-Z][0-9]{2}"
            r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: (?=[A-Z]{0,3}[0-9])[A-Z0-9]{1,4})?)(?![A-Za-z0-9])",
    "us_ssn": r"[0-8](?<![\w-].)(?<![0-9] .)[0-9]{2}(?<!000)(?<!666)([- ])(?!00)[0-9]{2}\1(?!0000)[0-9]{4}"
              r"(?![\w-]|[- ][0-9])",
    "ipv4": r"[0-9](?<![\w.].)[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?!\w|\.[0-9])",
    "ipv6": r"[0-9A-Fa-f:](?<![\w:.].)(?:(?<=:)|(?=[0-9A-Fa-f]{0,3}:))"
            r"[0-9A-Fa-f:]{1,38}(?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?![\w:]|\.[0-9])",
    "sk": r"s(?<![\w-].)k(?:-(?:proj-|ant-(?:api[0-9][0-9]-)?|or-v1-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,256}(?![\w-])"
          r"|_(?:live|test)_[A-Za-z0-9]{16,128}(?!\w))",
    "aws": r"A(?<![A-Za-z0-9].)(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])",
    "private_key": r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s]{0,8192}"
                   r"(?:-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----)?",
    "jwt": r"e(?<![\w-].)yJ[A-Za-z0-9_-]{5,4096}\.eyJ[A-Za-z0-9_-]{5,4096}\.[A-Za-z0-9_-]{10,4096}(?![\w-])",
}


def part(name: str, prefilter: Callable[[str], bool] = always) -> tuple[re.Pattern[str], Callable[[str], bool]]:
    """One compiled pattern of PATTERNS with its prefilter."""
    return re.compile(PATTERNS[name]), prefilter


EMAIL = re.compile(PATTERNS["email"])
DETECTORS = {
    detector.name: detector for detector in (
        Detector("email", ((EMAIL, contains("@")),), "[EMAIL]", always),
        Detector("phone", (part("phone"),), "[PHONE]", phone_valid),
        Detector("card", (part("card"),), "[CARD]", luhn_valid),
        Detector("iban", (part("iban"),), "[IBAN]", iban_valid),
        Detector("us_ssn", (part("us_ssn"),), "[SSN]", always),
        Detector("ip", (part("ipv4", contains(".")), part("ipv6", close_colons)), "[IP]", ip_valid),
        Detector("secret", (part("sk", contains("sk-", "sk_")), part("aws", contains("AKIA", "ASIA")),
                            part("private_key", contains("PRIVATE KEY")), part("jwt", contains("eyJ"))),
                 "[SECRET]", secret_valid),
    )
}


def email_matches(pattern: re.Pattern[str], text: str, pos: int) -> Iterator[re.Match[str]]:
    """The email pattern's matches, searched only around each `@` (a local part is at most 64 characters, a
    domain under 600): the same matches as scanning every position, without trying each word of a long text."""
    at, searched = text.find("@", pos), pos
    while at >= 0:
        match = pattern.search(text, max(searched, at - 64), at + 600)
        if match is None or match.start() > at:
            searched = max(searched, at - 64)
            at = text.find("@", at + 1)
            continue
        yield match
        searched = match.end()
        at = text.find("@", max(searched, at + 1))


class DetectorScanner:
    """One detector as a scanner of a pii guardrail, with the guardrail's action."""

    def __init__(self, detector: Detector, action: str) -> None:
        self.detector = detector
        self.action = action

    def scan(self, text: str, pos: int = 0) -> list[Hit]:
        """Every candidate from `pos` on, each with its validator's answer."""
        detector, hits = self.detector, []
        rest = text[pos:] if pos else text
        for pattern, prefilter in detector.parts:
            if prefilter(rest):
                matches = email_matches(pattern, text, pos) if pattern is EMAIL else pattern.finditer(text, pos)
                hits += [Hit(match.start(), match.end(), detector.name, detector.valid(match.group()), self.action,
                             detector.placeholder) for match in matches]
        return hits


def find(name: str, text: str) -> list[str]:
    """The matches of one detector that a redaction replaces (for tests and the bench)."""
    return [text[hit.start:hit.end] for hit in choose_hits(DetectorScanner(DETECTORS[name], "log").scan(text))]


def redact(text: str, names: tuple[str, ...] = tuple(DETECTORS)) -> str:
    """The text with every match of these detectors replaced by its placeholder."""
    check = ScanCheck(tuple(DetectorScanner(DETECTORS[name], "redact") for name in names))
    verdict = check(text, "input", None)
    return verdict.text if verdict.text is not None else text
