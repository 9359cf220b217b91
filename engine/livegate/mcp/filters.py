"""OpenAI's MCP tool filters, as a session's `{type: "mcp"}` tool states them, applied to a server's listing.

- `allowed_tools`: a list of tool names, or a filter `{tool_names, read_only}`; absent: every tool.
- `require_approval`: "always", "never", or `{always: filter, never: filter}`; absent: "always" (OpenAI's
  default: a call waits for the client's `mcp_approval_response`). A tool that neither filter names needs
  approval.

A filter matches a tool when each criterion it states holds: its name is in `tool_names`, and its read-only
hint (the MCP annotation `readOnlyHint`) equals `read_only`.
"""

from __future__ import annotations

from typing import Any


def _read_only(tool: dict[str, Any]) -> bool:
    annotations = tool.get("annotations") or {}
    return bool(annotations.get("readOnlyHint", annotations.get("read_only_hint", False)))


def matches(spec: Any, tool: dict[str, Any]) -> bool:
    """Whether the filter `spec` ({tool_names, read_only}) names `tool`."""
    if not isinstance(spec, dict):
        return False
    names = spec.get("tool_names")
    if names is not None and tool.get("name") not in names:
        return False
    read_only = spec.get("read_only")
    return read_only is None or _read_only(tool) == read_only


def allowed(allowed_tools: Any, tool: dict[str, Any]) -> bool:
    """Whether `allowed_tools` (a list of names, a filter, or None) lets the session use `tool`."""
    if allowed_tools is None:
        return True
    if isinstance(allowed_tools, list):
        return tool.get("name") in allowed_tools
    return matches(allowed_tools, tool)


def requires_approval(policy: Any, tool: dict[str, Any]) -> bool:
    """Whether a call of `tool` waits for the client's approval under `require_approval` (`policy`)."""
    if policy == "never":
        return False
    if isinstance(policy, dict):
        return not matches(policy.get("never"), tool)
    return True  # "always", or unset (OpenAI's default)
