"""livegate: the OpenAI Realtime API in front of Gemini Live.

Package map:
    mapping/    the mapping language: YAML loading, expressions, templates, helper functions
    translator  the sans-I/O per-connection translator that interprets mappings/
    dialect     the GA <-> beta reshape applied at the client edge
    validation  JSON Schema checks of client events, turned into OpenAI `error` events
    config      the config file (LiteLLM-compatible fields)
    upstream/   Gemini Live providers (AI Studio, Vertex AI, simulator) and the connection pump
    server/     the FastAPI front door
    simulator/  a deterministic local stand-in for Gemini Live (not a model)
"""

__version__ = "0.1.0"
