"""Counting what happened to every input record.

Bad records (an empty response, chosen == rejected, a pair that does not fit the length budget,
a malformed line) are dropped, but never silently: each stage records why and where, and the
job prints and saves the totals so a user can tell a clean data set from a broken one.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_EXAMPLES_PER_REASON = 5


class DataReport(BaseModel):
    """Counts of records read, kept and dropped (by reason), plus a few locations per reason.

    ``notes`` counts records that were kept but changed (e.g. a prompt truncated from the left).
    """

    model_config = ConfigDict(extra="forbid")

    source: str = ""
    total: int = 0
    kept: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    notes: dict[str, int] = Field(default_factory=dict)
    examples: dict[str, list[str]] = Field(default_factory=dict)

    def keep(self) -> None:
        """Record one record read and kept."""
        self.total += 1
        self.kept += 1

    def drop(self, reason: str, where: str) -> None:
        """Record one record read and dropped for ``reason`` at location ``where``."""
        self.total += 1
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        seen = self.examples.setdefault(reason, [])
        if len(seen) < MAX_EXAMPLES_PER_REASON:
            seen.append(where)

    def note(self, what: str, count: int = 1) -> None:
        """Count a change made to a kept record (not a drop)."""
        self.notes[what] = self.notes.get(what, 0) + count

    @property
    def n_dropped(self) -> int:
        """Total number of dropped records."""
        return sum(self.dropped.values())

    def summary(self) -> str:
        """One line for logs: ``source: N read, K kept; dropped: reason n (where, ...)``."""
        head = f"{self.source or 'data'}: {self.total} read, {self.kept} kept"
        if self.dropped:
            parts = [
                f"{reason} {count} ({', '.join(self.examples.get(reason, []))})"
                for reason, count in sorted(self.dropped.items())
            ]
            head += "; dropped: " + "; ".join(parts)
        if self.notes:
            head += "; " + ", ".join(f"{k} {v}" for k, v in sorted(self.notes.items()))
        return head
