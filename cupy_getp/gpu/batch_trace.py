"""A step's values at the engines' hook points, every row of it (`diff --batch`; `diff --layers` takes row 0 of the
single-sequence engine's one-row steps)."""

from __future__ import annotations

from ..engine.base import Trace


class BatchTrace(Trace):
    """A `Trace` whose values hold every row of one step: (R, ...) arrays, copied from the device."""

    def record(self, layer: int, point: str, value) -> None:
        super().record(layer, point, value.get())

    def row(self, i: int, into: Trace | None = None) -> Trace:
        """Row i's values as a single-sequence `Trace` (`into`, where given: the one-slot engine's `forward`
        fills its caller's), for `diff.compare_step`."""
        trace = Trace() if into is None else into
        for l, points in enumerate(self.values):
            for point, value in points.items():
                trace.record(l, point, value[i])
        trace.logits = None if self.logits is None else self.logits[i].copy()
        return trace
