"""What the bench's targets compare: the run's samples (``Measured``) and the
values computed from them (``Measure``: most are the ratio of two medians)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

# What ``--baseline``'s workers name their samples with (``baseline_``,
# ``baseline2_``, …): no target reads them.
BASELINE = "baseline"


def fmt(value: float | None) -> str:
    """Three significant digits, whole numbers from 100 on, ``-`` for nothing measured."""
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


@dataclass(frozen=True)
class Measured:
    """What a run measured, as the targets read it."""

    samples: dict[str, list[float]]
    sizes: dict[str, Any]
    pool: str

    def median(self, name: str) -> float | None:
        values = self.samples.get(name)
        return statistics.median(values) if values else None

    def peak(self, suffix: str, prefix: str = "") -> float | None:
        """The largest sample of every measurement named ``prefix…suffix``
        (a baseline's, ``baseline…``, only when ``prefix`` names them)."""
        return max(
            (
                v
                for k, vs in self.samples.items()
                if k.startswith(prefix)
                and k.endswith(suffix)
                and (prefix.startswith(BASELINE) or not k.startswith(BASELINE))
                for v in vs
            ),
            default=None,
        )


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# What a target measures -------------------------------------------------------


class Measure:
    """A value computed from a run's samples: ``None`` when they are missing."""

    def __call__(self, m: Measured) -> float | None:
        raise NotImplementedError

    def describe(self) -> str:
        """How the value is computed, in the docs' words (sample names as in the report)."""
        raise NotImplementedError

    def detail(self, m: Measured) -> str:
        """The report's detail, unless the target gives its own."""
        return ""


@dataclass(frozen=True)
class Ratio(Measure):
    """The median of one timing over another's: the measured pair a target compares."""

    of: str
    to: str

    def __call__(self, m: Measured) -> float | None:
        return ratio(m.median(self.of), m.median(self.to))

    def describe(self) -> str:
        return f"median `{self.of}` / median `{self.to}`"

    def detail(self, m: Measured) -> str:
        return f"{fmt(m.median(self.of))} s vs {fmt(m.median(self.to))} s"


@dataclass(frozen=True)
class RatioToSum(Measure):
    """The median of one timing over the sum of others' medians: a whole against
    the parts it should cost at most."""

    of: str
    parts: tuple[str, ...]

    def __call__(self, m: Measured) -> float | None:
        medians = [m.median(part) for part in self.parts]
        if any(median is None for median in medians):
            return None
        return ratio(m.median(self.of), sum(medians))

    def describe(self) -> str:
        parts = " + ".join(f"median `{part}`" for part in self.parts)
        return f"median `{self.of}` / ({parts})"

    def detail(self, m: Measured) -> str:
        parts = " + ".join(f"{fmt(m.median(part))} s" for part in self.parts)
        return f"{fmt(m.median(self.of))} s vs {parts}"


@dataclass(frozen=True)
class WithoutPart(Measure):
    """A timing over itself less a part of it (the leak proof in a scrubbed dump):
    how much longer the whole is for that part."""

    total: str
    part: str

    def __call__(self, m: Measured) -> float | None:
        total, part = m.median(self.total), m.median(self.part)
        return ratio(total, total - part) if total is not None and part is not None else None

    def describe(self) -> str:
        return f"median `{self.total}` / (median `{self.total}` - median `{self.part}`)"

    def detail(self, m: Measured) -> str:
        return (
            f"{fmt(m.median(self.part))} s of {fmt(m.median(self.total))} s; the search "
            f"thread's own {fmt(m.median(self.part.replace('_proof_', '_search_')))} s"
        )


@dataclass(frozen=True)
class SizeRatio(Measure):
    """One dump's size over another's (the run's ``extra["sizes"]``)."""

    of: str
    to: str

    def __call__(self, m: Measured) -> float | None:
        a, b = m.sizes.get(self.of), m.sizes.get(self.to)
        return a / b if a and b else None

    def describe(self) -> str:
        return f"dump size `{self.of}` / dump size `{self.to}`"

    def detail(self, m: Measured) -> str:
        a, b = m.sizes.get(self.of), m.sizes.get(self.to)
        return f"{a / 1024**2:.1f} MB vs {b / 1024**2:.1f} MB" if a and b else ""


@dataclass(frozen=True)
class Median(Measure):
    name: str

    def __call__(self, m: Measured) -> float | None:
        return m.median(self.name)

    def describe(self) -> str:
        return f"median `{self.name}`"


@dataclass(frozen=True)
class Largest(Measure):
    """The largest sample of one measurement: a worst case, not a typical one."""

    name: str

    def __call__(self, m: Measured) -> float | None:
        values = m.samples.get(self.name, [])
        return max(values) if values else None

    def describe(self) -> str:
        return f"largest `{self.name}`"


@dataclass(frozen=True)
class Peak(Measure):
    """The largest sample over every measurement named ``prefix…suffix`` (all jobs)."""

    suffix: str
    prefix: str = ""

    def __call__(self, m: Measured) -> float | None:
        return m.peak(self.suffix, self.prefix)

    def describe(self) -> str:
        return f"largest `{self.prefix}*{self.suffix}`"


@dataclass(frozen=True)
class Growth(Measure):
    """How far one peak rises above another."""

    peak: Peak
    base: Peak

    def __call__(self, m: Measured) -> float | None:
        high, low = self.peak(m), self.base(m)
        return high - low if high and low else None

    def describe(self) -> str:
        return f"{self.peak.describe()} minus {self.base.describe()}"


# The targets ------------------------------------------------------------------
