"""Gemini Live upstreams: where to connect and how to authenticate, per provider."""

from livegate.upstream.base import Provider, UpstreamTarget, provider_for

__all__ = ["Provider", "UpstreamTarget", "provider_for"]
