"""OpenAI's MCP tool filters as livegate applies them to a server's listing (engine/livegate/mcp/filters.py):
which tools a session may use (`allowed_tools`) and which calls wait for the client's approval
(`require_approval`, OpenAI's default: always)."""

from __future__ import annotations

from typing import Any

import pytest

from livegate.mcp.filters import allowed, requires_approval

READ = {"name": "search", "annotations": {"readOnlyHint": True}}
WRITE = {"name": "delete_doc", "annotations": {"readOnlyHint": False}}
BARE = {"name": "ping"}  # no annotations: not read-only


@pytest.mark.parametrize(("spec", "expected"), [
    (None, {"search", "delete_doc", "ping"}),
    (["search", "ping"], {"search", "ping"}),
    ([], set()),
    ({"tool_names": ["delete_doc"]}, {"delete_doc"}),
    ({"read_only": True}, {"search"}),
    ({"read_only": False}, {"delete_doc", "ping"}),
    ({"tool_names": ["search", "delete_doc"], "read_only": True}, {"search"}),  # both criteria must hold
])
def test_allowed_tools(spec: Any, expected: set[str]) -> None:
    assert {tool["name"] for tool in (READ, WRITE, BARE) if allowed(spec, tool)} == expected


@pytest.mark.parametrize(("policy", "expected"), [
    (None, {"search", "delete_doc", "ping"}),  # OpenAI's default
    ("always", {"search", "delete_doc", "ping"}),
    ("never", set()),
    ({"never": {"read_only": True}}, {"delete_doc", "ping"}),
    ({"never": {"tool_names": ["ping"]}, "always": {"tool_names": ["delete_doc"]}}, {"search", "delete_doc"}),
    ({"always": {"tool_names": ["delete_doc"]}}, {"search", "delete_doc", "ping"}),  # unnamed: approval
])
def test_require_approval(policy: Any, expected: set[str]) -> None:
    assert {tool["name"] for tool in (READ, WRITE, BARE) if requires_approval(policy, tool)} == expected
