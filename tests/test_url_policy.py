"""gateway.url_policy is the one outbound URL rule: remote MCP (gateway.mcp.policy) and webhooks read it."""

from __future__ import annotations

import pytest

from gateway import url_policy
from gateway.errors import BadInput
from gateway.mcp import policy


@pytest.mark.parametrize(("check", "label"), [(url_policy.check_remote_url, "url"),
                                              (policy.check_remote_url, "server_url")])
def test_one_rule_two_names(check, label: str) -> None:
    with pytest.raises(BadInput) as caught:
        check("http://hooks.example.com/x")
    assert caught.value.message == f"{label} must use https" and caught.value.param == label


def test_a_key_names_the_refusal() -> None:
    with pytest.raises(BadInput) as caught:
        url_policy.check_remote_url("https://10.0.0.8/hook", "guardrails.hook.url")
    assert caught.value.message.startswith("guardrails.hook.url must not use an IP address literal")


def test_resolved_addresses_keep_the_key() -> None:
    with pytest.raises(BadInput, match=r"^guardrails\.hook\.url host 'h\.example' resolves to a private address$"):
        url_policy.check_resolved_addresses("h.example", ["10.1.2.3"], "guardrails.hook.url")
    assert policy.check_resolved_addresses("h.example", ["8.8.8.8"]) == ["8.8.8.8"]
