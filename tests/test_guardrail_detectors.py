"""The pii detectors, table by table: what each finds, and what only looks like it (gateway.guardrails.detectors)."""

from __future__ import annotations

import pytest

from gateway.guardrails.detectors import DETECTORS, find, iban_valid, luhn_valid, redact

FOUND = [
    ("email", "write to john.doe@example.com today", "john.doe@example.com"),
    ("email", "a+tag@mail.co.uk.", "a+tag@mail.co.uk"),
    ("email", "(x_y%z@sub-domain.example.org)", "x_y%z@sub-domain.example.org"),
    ("phone", "call +1 (555) 123-4567 now", "+1 (555) 123-4567"),
    ("phone", "call +44 20 7946 0958.", "+44 20 7946 0958"),
    ("phone", "ring +33612345678", "+33612345678"),
    ("phone", "US (555) 123-4567", "(555) 123-4567"),
    ("phone", "US 555-123-4567", "555-123-4567"),
    ("phone", "US 555.123.4567", "555.123.4567"),
    ("phone", "London 020 7946 0958", "020 7946 0958"),
    ("phone", "Paris 06 12 34 56 78", "06 12 34 56 78"),
    ("phone", "Berlin 030/12345678", "030/12345678"),
    ("phone", "Tel: 0044 20 7946 0958", "0044 20 7946 0958"),
    ("phone", "Berlin +49 30 901820", "+49 30 901820"),
    ("card", "card 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
    ("card", "card 4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("card", "card 5500005555555559", "5500005555555559"),
    ("card", "amex 3782 822463 10005", "3782 822463 10005"),
    ("card", "19 digits 6011000990139424", "6011000990139424"),
    ("iban", "pay DE89 3704 0044 0532 0130 00 now", "DE89 3704 0044 0532 0130 00"),
    ("iban", "pay GB82WEST12345698765432.", "GB82WEST12345698765432"),
    ("iban", "pay GB82 WEST 1234 5698 7654 32 NOW", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "NL91ABNA0417164300", "NL91ABNA0417164300"),
    ("iban", "FR1420041010050500013M02606", "FR1420041010050500013M02606"),
    ("us_ssn", "SSN 123-45-6789.", "123-45-6789"),
    ("us_ssn", "SSN 078 05 1120", "078 05 1120"),
    ("ip", "host 192.168.1.1.", "192.168.1.1"),
    ("ip", "from 8.8.8.8:53", "8.8.8.8"),
    ("ip", "IP:10.0.0.255", "10.0.0.255"),
    ("ip", "v6 2001:db8::1 here", "2001:db8::1"),
    ("ip", "loopback ::1", "::1"),
    ("ip", "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("ip", "mapped ::ffff:192.0.2.128", "::ffff:192.0.2.128"),
    ("secret", "key sk-abcdefGHIJKL0123456789mnopQRST", "sk-abcdefGHIJKL0123456789mnopQRST"),
    ("secret", "key sk-proj-AbC123xyz456DEF789ghi012JKL_-x", "sk-proj-AbC123xyz456DEF789ghi012JKL_-x"),
    ("secret", "key sk-ant-api03-Abc123Def456Ghi789Jkl012Mno-AA", "sk-ant-api03-Abc123Def456Ghi789Jkl012Mno-AA"),
    ("secret", "aws AKIAIOSFODNN7EXAMPLE.", "AKIAIOSFODNN7EXAMPLE"),
    ("secret", "aws ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
    ("secret", "-----BEGIN RSA PRIVATE KEY-----\nMIIEab+/\ncd==\n-----END RSA PRIVATE KEY-----\nBye.",
     "-----BEGIN RSA PRIVATE KEY-----\nMIIEab+/\ncd==\n-----END RSA PRIVATE KEY-----"),
    ("secret", "cut short: -----BEGIN RSA PRIVATE KEY-----\nMIIEab+/\n...", "-----BEGIN RSA PRIVATE KEY-----\nMIIEab+/\n"),
    ("secret", "-----BEGIN PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----"),
    ("secret", "-----BEGIN OPENSSH PRIVATE KEY-----", "-----BEGIN OPENSSH PRIVATE KEY-----"),
    ("secret", "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U ok",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
]

NOT_FOUND = [
    ("email", "no at sign here, just example.com"),
    ("email", "user@localhost"),
    ("email", "@handle on social"),
    ("email", "a local part of 65 characters " + "x" * 65 + "@example.com"),
    ("phone", "in the year 2024 we sold 1500 units"),
    ("phone", "price $1,299.00 or 1299.99 EUR"),
    ("phone", "order id 123456789 and 98765432101"),
    ("phone", "dated 05.12.2024 and 2024-01-15"),
    ("phone", "version 1.2.3 of 10.5"),
    ("phone", "ssn-like 123-45-6789"),
    ("phone", "ISBN 978-3-16-148410-0, at 2024-01-15 10:30:00, range 10-20-30"),
    ("phone", "sort code 12-34-56, date 12/31/2024, zip 90210, timezone -0800, +5 points"),
    ("phone", "a lone zero 0 12 13 14 15, a long run 1700000000000"),
    ("phone", "a UUID 123e4567-e89b-12d3-a456-426614174000"),
    ("card", "fails Luhn 4111 1111 1111 1112"),
    ("card", "too short 4111 1111 111"),
    ("card", "too long 41111111111111111111111"),
    ("card", "all zeros 0000 0000 0000 0000"),
    ("card", "a plain id 1234567890123"),
    ("card", "digits in a word A4111111111111111"),
    ("card", "a timestamp in ms 1700000000000 and ISBN 978-3-16-148410-0"),
    ("iban", "bad checksum DE89 3704 0044 0532 0130 01"),
    ("iban", "wrong length DE89370400440532013"),
    ("iban", "unknown country ZZ89370400440532013000"),
    ("iban", "lower case de89370400440532013000"),
    ("us_ssn", "area 000: 000-12-3456"),
    ("us_ssn", "area 666: 666-12-3456"),
    ("us_ssn", "area 9xx: 999-12-3456 and 900-12-3456"),
    ("us_ssn", "group 00: 123-00-4567"),
    ("us_ssn", "serial 0000: 123-45-0000"),
    ("us_ssn", "no separator 123456789"),
    ("us_ssn", "mixed separators 123-45 6789"),
    ("us_ssn", "part of a longer run 123-45-67890"),
    ("ip", "octet too large 256.1.1.1"),
    ("ip", "too many parts 1.2.3.4.5"),
    ("ip", "too few 10.0.1"),
    ("ip", "leading zeros 010.1.1.1 and 10.01.1.1"),
    ("ip", "a long part 1.2.3.4567"),
    ("ip", "a time 12:30:45"),
    ("ip", "a MAC 00:1a:2b:3c:4d:5e"),
    ("ip", "C++ std::vector and a::b::c"),
    ("ip", "a version v1.2.3.4"),
    ("ip", "a build 10.0.19041.1234, a ratio 1:2:3, coordinates 48.8566, 2.3522"),
    ("ip", "a hash deadbeefcafe0123 and a UUID 123e4567-e89b-12d3-a456-426614174000"),
    ("secret", "the sk-learn-tutorial-for-beginners-guide"),
    ("secret", "short sk-abc123"),
    ("secret", "AKIA too short AKIAIOSFODNN7"),
    ("secret", "-----BEGIN PUBLIC KEY-----"),
    ("secret", "-----BEGIN CERTIFICATE-----"),
    ("secret", "not a jwt eyJhbGciOi.notjson.x"),
]


@pytest.mark.parametrize(("detector", "text", "match"), FOUND)
def test_finds(detector: str, text: str, match: str) -> None:
    assert find(detector, text) == [match]


@pytest.mark.parametrize(("detector", "text"), NOT_FOUND)
def test_does_not_find(detector: str, text: str) -> None:
    assert find(detector, text) == []


def test_every_detector_has_both_tables() -> None:
    assert {row[0] for row in FOUND} == set(DETECTORS) == {row[0] for row in NOT_FOUND}


@pytest.mark.parametrize(("number", "valid"), [
    ("4111111111111111", True), ("4111111111111112", False), ("79927398713", True), ("79927398710", False),
    ("0000000000000", False),
])
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


@pytest.mark.parametrize(("iban", "valid"), [
    ("DE89370400440532013000", True), ("DE89370400440532013001", False), ("GB82WEST12345698765432", True),
    ("GB82WEST1234569876543", False), ("XX82WEST12345698765432", False),
])
def test_iban_checksum(iban: str, valid: bool) -> None:
    assert iban_valid(iban) is valid


def test_redaction_replaces_each_match_with_its_placeholder() -> None:
    text = ("Mail a.b@example.com or call +1 (555) 123-4567; card 4111 1111 1111 1111, IBAN DE89370400440532013000, "
            "SSN 123-45-6789 from 10.0.0.1 with AKIAIOSFODNN7EXAMPLE. Year 2024, $1,299.")
    assert redact(text) == ("Mail [EMAIL] or call [PHONE]; card [CARD], IBAN [IBAN], SSN [SSN] from [IP] with "
                            "[SECRET]. Year 2024, $1,299.")


def test_redaction_of_some_detectors_leaves_the_others() -> None:
    assert redact("a@b.io and 10.0.0.1", ("ip",)) == "a@b.io and [IP]"


def test_placeholders() -> None:
    assert {name: detector.placeholder for name, detector in DETECTORS.items()} == {
        "email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]", "us_ssn": "[SSN]", "ip": "[IP]",
        "secret": "[SECRET]"}
