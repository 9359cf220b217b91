"""Spend reports: the spend rows of a date range summed by key, team, user, model, tag, day or end user
(any combination), with per-modality tokens. One SQL query on either database (the day and tag
expressions differ); the totals come from a second query without the tag expansion, so a row with two
tags counts twice in the tag groups and once in the totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livegate.accounting.database import Database
from livegate.accounting.store import SPEND_TOKEN_COLUMNS

# group name -> (the column it is shown as, the SQL expression it groups by)
GROUPS: dict[str, tuple[str, str]] = {
    "key": ("api_key", "s.api_key"),
    "team": ("team_id", "s.team_id"),
    "user": ("user_id", "s.user_id"),
    "model": ("model", "s.model"),
    "tag": ("tag", "t.value"),
    "day": ("day", "{day}"),
    "end_user": ("end_user", "s.end_user"),
}
# LiteLLM's group_by names
GROUP_ALIASES = {"api_key": "key", "customer": "end_user", "internal_user": "user", "team_id": "team",
                 "user_id": "user", "date": "day"}
# names shown next to a group's id (current aliases of keys, teams and users)
LABELS = {"key": ("key_alias", "MAX(k.key_alias)"), "team": ("team_alias", "MAX(tm.team_alias)"),
          "user": ("user_alias", "MAX(u.user_alias)")}
_DAY = {"sqlite": "strftime('%Y-%m-%d', s.start_time, 'unixepoch')",
        "postgresql": "to_char(to_timestamp(s.start_time) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"}
_TAGS = {"sqlite": "LEFT JOIN json_each(s.request_tags) AS t ON TRUE",
         "postgresql": "LEFT JOIN LATERAL jsonb_array_elements_text(s.request_tags::jsonb) AS t(value) ON TRUE"}
_HAS_TAG = {"sqlite": "EXISTS (SELECT 1 FROM json_each(s.request_tags) AS f WHERE f.value = ${n})",
            "postgresql": "s.request_tags::jsonb ? ${n}"}
METRICS = ("sessions", "spend", "unpriced_sessions", "prompt_tokens", "completion_tokens", "total_tokens",
           *(f"{name}_tokens" for name in SPEND_TOKEN_COLUMNS))


@dataclass(frozen=True)
class ReportQuery:
    start: float  # UNIX seconds, inclusive
    end: float  # exclusive
    group_by: tuple[str, ...]
    api_key: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    tag: str | None = None


def group_names(text: str | None) -> tuple[str, ...]:
    """`key,day` -> ("key", "day"), LiteLLM's names accepted; ValueError naming an unknown one."""
    names = []
    for part in (text or "key").split(","):
        name = GROUP_ALIASES.get(part.strip(), part.strip())
        if name not in GROUPS:
            raise ValueError(f"{part.strip()!r}: expected one of {', '.join(GROUPS)}")
        if name not in names:
            names.append(name)
    return tuple(names)


def _sums() -> list[str]:
    tokens = ["prompt_tokens", "completion_tokens", "total_tokens", *(f"{n}_tokens" for n in SPEND_TOKEN_COLUMNS)]
    return ["COUNT(*) AS sessions", "COALESCE(SUM(s.spend), 0) AS spend",
            "SUM(CASE WHEN s.spend IS NULL AND s.total_tokens > 0 THEN 1 ELSE 0 END) AS unpriced_sessions",
            *(f"CAST(COALESCE(SUM(s.{c}), 0) AS BIGINT) AS {c}" for c in tokens)]


def _filters(query: ReportQuery, dialect: str) -> tuple[str, list[Any]]:
    where = ["s.start_time >= $1", "s.start_time < $2"]
    args: list[Any] = [query.start, query.end]
    for column, value in (("s.api_key", query.api_key), ("s.team_id", query.team_id),
                          ("s.user_id", query.user_id), ("s.model", query.model)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if query.tag is not None:
        args.append(query.tag)
        where.append(_HAS_TAG[dialect].replace("${n}", f"${len(args)}"))
    return " AND ".join(where), args


async def spend_report(db: Database, query: ReportQuery) -> dict[str, Any]:
    """{"rows": [one per group, biggest spend first], "totals": {...}}; every metric in METRICS."""
    dialect = db.dialect
    where, args = _filters(query, dialect)
    columns, keys = [], []
    for name in query.group_by:
        shown, expression = GROUPS[name]
        expression = expression.format(day=_DAY[dialect])
        columns.append(f"{expression} AS {shown}")
        keys.append(expression)
        if name in LABELS:
            columns.append(f"{LABELS[name][1]} AS {LABELS[name][0]}")
    joins = ["LEFT JOIN livegate_keys k ON k.token_hash = s.api_key",
             "LEFT JOIN livegate_teams tm ON tm.team_id = s.team_id",
             "LEFT JOIN livegate_users u ON u.user_id = s.user_id"]
    if "tag" in query.group_by:
        joins.append(_TAGS[dialect])
    grouped = (f"SELECT {', '.join([*columns, *_sums()])} FROM livegate_spend_logs s {' '.join(joins)} "
               f"WHERE {where} GROUP BY {', '.join(keys)} ORDER BY spend DESC, {', '.join(keys)}")
    total = f"SELECT {', '.join(_sums())} FROM livegate_spend_logs s WHERE {where}"
    async with db.transaction() as tx:
        rows = await tx.fetch(grouped, *args)
        totals = (await tx.fetch(total, *args))[0]
    return {"rows": [_numbers(row) for row in rows], "totals": _numbers(totals)}


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in METRICS:
        if name in out:
            out[name] = float(out[name] or 0) if name == "spend" else int(out[name] or 0)
    return out
