"""Mounting the accounting routes (keys, spend, client secrets, health, metrics) and building the
Accounting service from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from livegate.accounting.database import open_database
from livegate.accounting.gate import Accounting
from livegate.accounting.prices import PriceTable
from livegate.accounting.store import Store
from livegate.config import Config
from livegate.server.client_secrets import add_client_secret_routes
from livegate.server.health import add_health_routes
from livegate.server.keys import add_key_routes
from livegate.server.spend import add_spend_routes

if TYPE_CHECKING:
    from livegate.server.app import Gateway


def build_accounting(config: Config) -> Accounting:
    store = Store(open_database(config.store.database_url, config.store.path))
    return Accounting(store, PriceTable.load(), master_key=config.master_key, poll_interval=config.store.poll_seconds,
                      max_buffered_rows=config.store.max_buffered_rows, spill_dir=config.store.spill_directory(),
                      admit_when_unavailable=config.store.admit_when_unavailable)


def add_accounting_routes(app: FastAPI, gateway: Gateway) -> None:
    add_key_routes(app, gateway)
    add_spend_routes(app, gateway)
    add_client_secret_routes(app, gateway)
    add_health_routes(app, gateway)
