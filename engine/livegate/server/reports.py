"""GET /spend/report (and LiteLLM's GET /global/spend/report): spend over a date range grouped by key,
team, user, model, tag, day or end user (`group_by=day,model`), with per-modality tokens; `format=csv`
downloads the same rows as CSV.

    ?start_date=2026-12-01&end_date=2026-12-31   whole UTC days, the end inclusive (default: the last 30 days)
    &group_by=key|team|user|model|tag|day|end_user (LiteLLM's api_key, customer, internal_user too; default key)
    &api_key= &team_id= &user_id= (internal_user_id) &model= &tag=   filters
    &format=json|csv

The master key reports on everything, a virtual key on its own spend. The answer has the same shape for
every grouping (LiteLLM's /global/spend/report nests differently per group_by; livegate answers one table).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from livegate.accounting.reports import GROUPS, LABELS, METRICS, ReportQuery, group_names, spend_report
from livegate.server.admin import ApiError, caller, parse_time
from livegate.server.keys import guarded, token_of
from livegate.server.strict import NOTHING_DONE, check_query

if TYPE_CHECKING:
    from livegate.server.app import Gateway

DEFAULT_DAYS = 30


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def add_report_routes(app: FastAPI, gateway: Gateway) -> None:
    async def report(request: Request) -> Any:
        who = await caller(gateway, request)
        query = check_query("GET /spend/report", request.query_params)
        api_key = token_of(query["api_key"]) if query.get("api_key") else None
        if who.kind == "key":
            if api_key not in (None, who.token_hash):
                raise ApiError(403, "A key may only report on its own spend.", "forbidden", "api_key")
            api_key = who.token_hash
        elif gateway.config.master_key and who.kind != "master":
            raise ApiError(403, "Only the master key may do this.", "forbidden")
        end = parse_time(query["end_date"], "end_date", end_of_day=True) if query.get("end_date") else \
            parse_time(_day(time.time()), "end_date", end_of_day=True)
        start = parse_time(query["start_date"], "start_date") if query.get("start_date") else \
            end - DEFAULT_DAYS * 86400
        if start >= end:
            raise ApiError(400, f"start_date: must be before end_date; {NOTHING_DONE}.", "invalid_value", "start_date")
        try:
            groups = group_names(query.get("group_by"))
        except ValueError as exc:
            raise ApiError(400, f"group_by: {exc}", "invalid_value", "group_by") from None
        await gateway.accounting.writer.flush()  # the rows the background writer still holds count too
        result = await spend_report(gateway.accounting.store.db, ReportQuery(
            start, end, groups, api_key=api_key, team_id=query.get("team_id"),
            user_id=query.get("user_id") or query.get("internal_user_id"), model=query.get("model"),
            tag=query.get("tag")))
        period = {"start_date": _day(start), "end_date": _day(end - 1)}
        if query.get("format") == "csv":
            return Response(_csv(groups, result["rows"]), media_type="text/csv; charset=utf-8", headers={
                "content-disposition": f'attachment; filename="livegate-spend-{period["start_date"]}-'
                                       f'{period["end_date"]}.csv"'})
        return {**period, "group_by": list(groups), "currency": "USD", **result}

    for path in ("/spend/report", "/global/spend/report"):
        app.add_api_route(path, guarded(report), methods=["GET"], include_in_schema=False)


def _csv(groups: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for name in groups:
        columns.append(GROUPS[name][0])
        if name in LABELS:
            columns.append(LABELS[name][0])
    columns.extend(METRICS)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
