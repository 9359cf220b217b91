"""Budget periods (LiteLLM's `budget_duration`), shared by keys, teams and users."""

from __future__ import annotations

import math

from livegate.accounting.database import Tx
from livegate.accounting.keys import parse_duration


async def reset_due_budgets(tx: Tx, table: str, column: str, ids: list[str] | None, now: float) -> None:
    """LiteLLM's budget_duration: spend goes back to 0 when the period ends, and a new period starts (whole
    periods from the first one, so resets stay on schedule however late they are noticed). `ids` None: every
    row of the table that is due."""
    if ids is not None and not ids:
        return
    scope = f"AND {column} IN ({params(len(ids), 2)})" if ids is not None else ""
    due = await tx.fetch(f"SELECT {column} AS id, budget_duration, budget_reset_at FROM {table} WHERE "
                         f"budget_reset_at IS NOT NULL AND budget_reset_at <= $1 {scope}", now, *(ids or []))
    for row in due:
        period = parse_duration(row["budget_duration"], "budget_duration") or 0
        next_reset = row["budget_reset_at"]
        if period:  # the first reset time after now, whole periods from the last one
            next_reset += (math.floor((now - next_reset) / period) + 1) * period
        await tx.execute(f"UPDATE {table} SET spend = 0, budget_reset_at = $2 WHERE {column} = $1 "
                         "AND budget_reset_at = $3", row["id"], float(next_reset) if period else None,
                         row["budget_reset_at"])


def params(count: int, start: int = 1) -> str:
    """`$start, ..., $(start+count-1)`."""
    return ", ".join(f"${i}" for i in range(start, start + count))
