"""WebRTC calls into Gemini Live: `POST /v1/realtime/calls` (livegate.webrtc.routes). Only `settings` is
imported without the `webrtc` extra; the rest loads aiortc when the first call comes."""
