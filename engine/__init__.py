"""livegate: the OpenAI Realtime API in front of Gemini Live.

The source folder is `engine/` in the repository; it installs and imports as `livegate`.

Package map:
    mapping/    the mapping language: YAML loading with positions, expressions and templates, helper
                functions, the declared session state (mappings/state.yaml)
    translator  the sans-I/O per-connection translator that interprets mappings/, including the
                dialect reshape (mappings/dialects/) at the client edge
    validation  JSON Schema checks of client events, turned into OpenAI `error` events
    errors      OpenAI `error` events livegate builds itself
    config      the config file (LiteLLM-compatible fields)
    paths       where mappings/ and schemas/ are (the checkout, or inside the installed package)
    upstream/   Gemini Live providers (AI Studio, Vertex AI, simulator), google-auth credentials and
                the upstream WebSocket
    server/     the FastAPI front door: /v1/realtime (the session pump) and the passthrough routes
    simulator/  a deterministic local stand-in for Gemini Live (not a model)
    cli         `livegate`, `livegate lint`, `livegate simulator`
"""

__version__ = "0.1.0"
