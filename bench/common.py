"""What every benchmark shares: timing, and one result line for ``bench/run``."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Result:
    """One benchmark figure against its in-run baseline."""

    name: str
    figure: float
    baseline: float
    unit: str
    goal: float  # the ratio figure / baseline must be at most this
    spread: tuple[float, float] | None = None  # min and max of the figure's samples, when a median
    baseline_spread: tuple[float, float] | None = None
    note: str = ""  # what else the row measured (a floor, a profile's total)

    @property
    def ratio(self) -> float:
        """figure / baseline."""
        return self.figure / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool:
        """Whether the goal was met."""
        return self.ratio <= self.goal

    def line(self) -> str:
        """One human line."""
        verdict = "met" if self.met else "NOT met"
        note = f"; {self.note}" if self.note else ""
        return (
            f"{self.name}: {self.shown()} vs baseline {self.shown(baseline=True)}"
            f" -> ratio {self.ratio:.3f} (goal <= {self.goal}) {verdict}{note}"
        )

    def shown(self, *, baseline: bool = False) -> str:
        """The figure (or the baseline) with its unit, and its min-max when it is a median."""
        value, spread = (self.baseline, self.baseline_spread) if baseline else (self.figure, self.spread)
        ranged = f" ({spread[0]:.4g}-{spread[1]:.4g})" if spread else ""
        return f"{value:.4g} {self.unit}{ranged}"

    def as_json(self) -> str:
        """A JSON object with the derived fields too."""
        return json.dumps({**asdict(self), "ratio": self.ratio, "met": self.met})


def median_seconds(action: Callable[[], object], *, runs: int, warmup: int = 2) -> float:
    """Median wall time of ``action`` over ``runs`` runs after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def median_with_spread(samples: list[float], *, scale: float = 1.0) -> tuple[float, tuple[float, float]]:
    """The median of ``samples`` and their (min, max), each times ``scale``."""
    return statistics.median(samples) * scale, (min(samples) * scale, max(samples) * scale)


def report(result: Result) -> int:
    """Print a benchmark's line for people and its JSON on stderr; the exit code is 0 whatever the ratio."""
    print(result.line())
    print(result.as_json(), file=sys.stderr)
    return 0
