"""Mounting the accounting routes (keys, teams, users, spend logs and reports, models, live sessions,
client secrets, health, metrics, the admin page) and building the Accounting service from the config."""

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
from livegate.server.models_routes import add_model_routes
from livegate.server.reports import add_report_routes
from livegate.server.sessions_routes import add_session_routes
from livegate.server.spend import add_spend_routes
from livegate.server.teams import add_team_routes
from livegate.server.ui import add_ui_routes
from livegate.server.users import add_user_routes
from livegate.translation.capabilities import ModelTable, shipped_table, short_model_id

if TYPE_CHECKING:
    from livegate.server.app import Gateway


def build_accounting(config: Config, models: ModelTable | None = None) -> Accounting:
    store = Store(open_database(config.store.database_url, config.store.path))
    accounting = Accounting(store, PriceTable.load(), master_key=config.master_key,
                            poll_interval=config.store.poll_seconds, max_buffered_rows=config.store.max_buffered_rows,
                            spill_dir=config.store.spill_directory(),
                            admit_when_unavailable=config.store.admit_when_unavailable)
    # The simulator is charged like the model it imitates (mappings/models.yaml `price`); an id also served by
    # a real provider keeps that provider's price (unknown stays unknown).
    real = {short_model_id(r.model_id) for r in config.routes if r.provider != "simulator"}
    accounting.simulated = frozenset(short_model_id(r.model_id) for r in config.routes
                                     if r.provider == "simulator") - real
    accounting.models = models or shipped_table()
    return accounting


def add_accounting_routes(app: FastAPI, gateway: Gateway) -> None:
    add_key_routes(app, gateway)
    add_team_routes(app, gateway)
    add_user_routes(app, gateway)
    add_spend_routes(app, gateway)
    add_report_routes(app, gateway)
    add_model_routes(app, gateway)
    add_session_routes(app, gateway)
    add_ui_routes(app)
    add_client_secret_routes(app, gateway)
    add_health_routes(app, gateway)
