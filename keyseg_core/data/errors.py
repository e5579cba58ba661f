"""Bad-input reporting shared by every reader: one error type that names file and record, and a
skip report so that `skip_bad=True` never drops a sample silently."""

from __future__ import annotations

from collections.abc import Callable

from collections import Counter
from dataclasses import dataclass, field


class DatasetError(ValueError):
    """A data file or one record in it is unusable.

    `reason` is a short stable key ("missing_image", "bad_json", ...) used to group skips.
    """

    def __init__(self, file: str, record: object, reason: str, detail: str) -> None:
        self.file = str(file)
        self.record = record
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.file}: record {record}: {detail} [{reason}]")


@dataclass
class SkipReport:
    """Counts of skipped records by reason, with the first few errors of each reason as examples."""

    max_examples: int = 3
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, error: DatasetError) -> None:
        self.counts[error.reason] += 1
        shown = self.examples.setdefault(error.reason, [])
        if len(shown) < self.max_examples:
            shown.append(str(error))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def summary(self) -> str:
        """Multi-line human summary; one line per reason, examples indented below it."""
        if not self:
            return "no records skipped"
        lines = [f"skipped {self.total} record(s):"]
        for reason, count in self.counts.most_common():
            lines.append(f"  {reason}: {count}")
            lines.extend(f"    e.g. {example}" for example in self.examples[reason])
        return "\n".join(lines)


class Collector:
    """Raise errors (strict) or record them in a SkipReport (skip_bad), at one call site."""

    def __init__(self, skip_bad: bool, report: SkipReport | None = None) -> None:
        self.skip_bad = skip_bad
        self.report = report if report is not None else SkipReport()

    def handle(self, error: DatasetError) -> None:
        if not self.skip_bad:
            raise error
        self.report.add(error)

    def keeps(self, validate: Callable[[], object]) -> bool:
        """Whether a record passes `validate` (which raises DatasetError); a failure is handled here."""
        try:
            validate()
        except DatasetError as exc:
            self.handle(exc)
            return False
        return True
