"""Pool state in Prometheus (served by /metrics with the accounting metrics). Labels are model group and
deployment names from the config, so they are bounded; no key, URL or project secret is a label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class PoolMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.sessions = Gauge("livegate_deployment_sessions", "Sessions this instance has on each deployment now",
                              ["model_group", "deployment"], registry=r)
        self.placements = Counter("livegate_deployment_placements", "Sessions placed on each deployment (new "
                                  "sessions, and sessions moved there from a failing one)",
                                  ["model_group", "deployment"], registry=r)
        self.failures = Counter("livegate_deployment_failures", "Deployment failures: `setup` (a Live setup "
                                "refused, closed or unanswered), `lost` (a live connection closed abnormally), "
                                "`health_check` (a /health handshake failed)", ["deployment", "kind"], registry=r)
        self.cooldowns = Counter("livegate_deployment_cooldowns", "Cooldowns started (more than allowed_fails "
                                 "setup failures within a minute)", ["deployment"], registry=r)
        self.cooling = Gauge("livegate_deployment_cooling_down", "1 while the deployment is cooling down",
                             ["deployment"], registry=r)
        self.healthy = Gauge("livegate_deployment_healthy", "The latest /health handshake: 1 answered, 0 failed",
                             ["deployment"], registry=r)
        self.unavailable = Counter("livegate_pool_unavailable", "New sessions refused because no deployment of "
                                   "their model group (nor of its fallbacks) could take one", ["model_group"],
                                   registry=r)
