"""Prometheus metrics (prometheus-client), one registry per app so several apps can live in one process.
Labels carry models, routes and close codes, never keys, and only values from bounded sets: routes and
refusal codes are livegate's constants, models the config's upstream ids, close codes close_code_label's."""

from __future__ import annotations

from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from livegate.close_codes import TABLE

# Close codes a label may carry: RFC 6455's, and livegate's own (close_codes.TABLE, which the docs list).
# A client may close with any code from 1000 to 4999: the others are counted as `other`, so a client cannot
# mint a new series per code (a cardinality attack on the scraper).
KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                               1014, 1015} | {c.code for c in TABLE})
_HTTP_STATUSES = frozenset(int(s) for s in HTTPStatus)


def close_code_label(code: int | None, http: bool = False) -> str:
    """The `close_code` label: a known WebSocket close code (or, for REST calls, a standard HTTP status),
    else `other`."""
    if code is None:
        return "None"
    return str(code) if code in (_HTTP_STATUSES if http else KNOWN_CLOSE_CODES) else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.active_sessions = Gauge("livegate_active_sessions", "Sessions open now", ["model", "route"], registry=r)
        self.sessions_ended = Counter("livegate_sessions_ended", "Sessions and REST calls ended, by close code "
                                      "(HTTP status for REST)", ["route", "close_code"], registry=r)
        self.frames = Counter("livegate_frames", "WebSocket frames received", ["route", "direction"], registry=r)
        self.bytes = Counter("livegate_bytes", "WebSocket bytes received", ["route", "direction"], registry=r)
        self.upstream_connect = Histogram("livegate_upstream_connect_seconds", "Time to open the Gemini session",
                                          ["route"], registry=r,
                                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.translation_errors = Counter("livegate_translation_errors", "error events sent to OpenAI clients",
                                          ["route"], registry=r)
        self.resumptions = Counter("livegate_resumptions", "Gemini session resumption handles received",
                                   ["route"], registry=r)
        self.lifecycle_violations = Counter("livegate_lifecycle_violations", "Inputs that moved a session's "
                                            "turn/response state along a transition mappings/state.yaml does not "
                                            "list", ["route", "input"], registry=r)
        self.recoveries = Counter("livegate_recoveries", "Faults of Gemini's the session recovered from (or gave "
                                  "up on), by kind (translation/watchdog.py RECOVERY_KINDS)", ["route", "kind"],
                                  registry=r)
        self.spend = Counter("livegate_spend_usd", "Spend in USD (known prices only)", ["model"], registry=r)
        self.unknown_cost = Counter("livegate_unknown_cost_sessions", "Sessions whose model has no price",
                                    ["model"], registry=r)
        self.tokens = Counter("livegate_tokens", "Tokens used", ["model", "type"], registry=r)
        self.store_backlog = Gauge("livegate_store_backlog", "Spend rows waiting to be written", registry=r)
        self.store_up = Gauge("livegate_store_up", "1 when the last spend store write succeeded", registry=r)
        self.store_dropped = Gauge("livegate_store_dropped_rows", "Spend rows dropped (backlog full)", registry=r)
        self.refusals = Counter("livegate_handshake_refusals", "Handshakes refused by accounting",
                                ["route", "code"], registry=r)
        self.time_to_first_audio = Histogram(
            "livegate_time_to_first_audio_seconds", "From the user's input end (commit, response.create, end of "
            "speech) to the answer's first audio byte sent", ["model"], registry=r,
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10))
        self.guardrail_latency = Histogram("livegate_guardrail_seconds", "Time one guardrail took to decide",
                                           ["guardrail", "stage", "verdict"], registry=r,
                                           buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
        self.counters_up = Gauge("livegate_counters_up", "1 while the shared counters (rpm, tpm, leases, budget "
                                 "reservations: Redis or PostgreSQL) answer; 0 during an outage", registry=r)
        self.response_refusals = Counter("livegate_response_refusals", "Responses not started because their "
                                         "reservation was refused (budget, tpm, counters out of reach)", ["code"],
                                         registry=r)
        self.store_up.set(1)
        self.counters_up.set(1)
