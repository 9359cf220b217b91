"""Google AI Studio (Gemini Developer API): API key in `x-goog-api-key`, model `models/<id>`."""

from __future__ import annotations

from livegate.upstream.base import UpstreamTarget, http_base, ws_base

AISTUDIO_ORIGIN = "wss://generativelanguage.googleapis.com"
AISTUDIO_VERSION = "v1beta"  # what the public docs use; pinned rather than left to a default


class AIStudioProvider:
    backend = "aistudio"

    def __init__(self, model_id: str, *, api_key: str, api_base: str | None = None,
                 api_version: str | None = None) -> None:
        self.model_id = model_id
        self._api_key = api_key
        self._origin = ws_base(api_base) if api_base else AISTUDIO_ORIGIN
        self._http_origin = http_base(self._origin)
        self._version = api_version or AISTUDIO_VERSION

    @property
    def url(self) -> str:
        return f"{self._origin}/ws/google.ai.generativelanguage.{self._version}.GenerativeService.BidiGenerateContent"

    def generate_url(self, model: str) -> str:
        return f"{self._http_origin}/{self._version}/models/{model}:streamGenerateContent?alt=sse"

    def setup_model(self) -> str:
        model = self.model_id
        return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"

    async def target(self) -> UpstreamTarget:
        return UpstreamTarget(self.url, {"x-goog-api-key": self._api_key}, self.setup_model(), self.backend)
