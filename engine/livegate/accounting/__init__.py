"""Accounting: what sessions cost, who may open them, and where that is written down.

    prices.py   the price table (mappings/prices.yaml, overridable per model_list entry)
    cost.py     usageMetadata -> tokens by modality -> USD
    keys.py     virtual keys and client secrets: generation, hashing, durations
    store.py    the spend store: SQLite (default) or PostgreSQL, same schema and migrations
    writer.py   the background writer that batches spend off the audio path
    gate.py     the Accounting service: handshake checks, per-session grants, mid-session limits
    metrics.py  Prometheus metrics
"""
