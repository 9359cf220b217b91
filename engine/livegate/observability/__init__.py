"""Seeing inside sessions and stopping what must not be said (docs/operating/observability.md).

- redaction.py: PII detectors and the redactor applied before anything is stored, exported or logged;
- guardrails.py: the guardrails (deny list, PII, a generic HTTP one) and the runner the pump drives;
- turns.py: turn timing read from a session's OpenAI events (time to first audio byte, turn spans);
- tracing.py: OpenTelemetry spans (imported only when tracing is on);
- transcripts.py: the opt-in transcript of a session kept in the spend store.
"""
