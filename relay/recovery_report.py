"""The figure producers want from sale recovery: for each producer and affiliate, the
slips notified, how many were paid and how many expired, and the median time to pay.

What `relay recovery` prints, and what the admin page and `/metrics` can show: the store
computes it (`Store.recovery_figures`, indexed reads over the window only); this adds
the window and the totals across producers. Returns data; prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.records import RecoveryFigures
from relay.store import Store

# A month of slips by default: slips live days, retention keeps buyer data 30 days, and a
# window keeps the report's cost that of the slips in it, never that of the whole history.
DEFAULT_WINDOW_S = 30 * 86400.0


@dataclass(frozen=True)
class RecoveryReport:
    since_ms: int
    # One row per affiliate of each producer, then the producer's own (affiliate None).
    rows: list[RecoveryFigures]

    @property
    def producers(self) -> list[RecoveryFigures]:
        return [row for row in self.rows if row.affiliate_code is None]

    @property
    def affiliates(self) -> list[RecoveryFigures]:
        return [row for row in self.rows if row.affiliate_code is not None]

    def slips_by_outcome(self) -> dict[str, int]:
        """Slips notified in the window by what became of them, across every producer."""
        producers = self.producers
        return {
            "paid": sum(row.paid for row in producers),
            "expired": sum(row.expired for row in producers),
            "open": sum(row.open for row in producers),
        }


async def recovery_report(
    store: Store,
    now_ms: int,
    *,
    since_ms: int | None = None,
    producer_id: str | None = None,
    affiliate_code: str | None = None,
) -> RecoveryReport:
    """The figures for slips notified since `since_ms` (default: `DEFAULT_WINDOW_S` ago)."""
    since_ms = now_ms - int(DEFAULT_WINDOW_S * 1000) if since_ms is None else since_ms
    rows = await store.recovery_figures(
        since_ms, producer_id=producer_id, affiliate_code=affiliate_code
    )
    return RecoveryReport(since_ms, rows)
