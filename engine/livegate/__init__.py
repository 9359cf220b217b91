"""livegate: the OpenAI Realtime API in front of Gemini Live.

`engine/` is the source root of the repository; this package is `engine/livegate/`.

Package map (each folder one room of the architecture):
    mapping/      the mapping language: YAML loading with positions, expressions and templates, helper
                  functions, the declared session state (mappings/state.yaml), lint
    translation/  the sans-I/O translation core: the per-connection Translator that interprets mappings/
                  (with the dialect reshape at the client edge), client-event validation, generic `error`
                  events, the model capability table, the G.711 codec
    server/       the FastAPI front door: /v1/realtime (the session pump), the key API, the passthroughs
    upstream/     Gemini Live connections: providers (AI Studio, Vertex AI, simulator), google-auth
                  credentials, the upstream WebSocket, the resumption policy
    accounting/   virtual keys, budgets and limits, cost per modality, the spend store
    simulator/    a deterministic local stand-in for Gemini Live (not a model)
    config        the config file (LiteLLM-compatible fields)
    paths         where mappings/ and schemas/ are (the checkout, or inside the installed package)
    cli           `livegate`, `livegate lint`, `livegate simulator`
"""

__version__ = "0.1.0"
