"""livegate as the MCP client of a session's `{type: "mcp"}` tools (streamable HTTP, the official `mcp` package).

Gemini Live runs no MCP server on Vertex and reports none of the calls where it does, so livegate is the client:
the session core commands an `McpRequest` (translation/commands.py), the pump hands it to the session's
`McpClients` (client.py), and the result comes back to the core as `mcp_result`; the mappings turn it into
OpenAI's MCP events and items (mappings/lifecycle/mcp_listed.yaml, mcp_called.yaml). The `mcp` package is
imported by the first request only (the `mcp` extra); sessions without MCP tools never load it.
"""

from livegate.mcp.client import McpClients, mcp_available

__all__ = ["McpClients", "mcp_available"]
