"""Per-frame timestamps for the latency benchmark (``--trace DIR``), saved as .npy files."""

from __future__ import annotations

import numpy as np


class Tracer:
    """Rows of (seq, t0, t1, ...) in ns, one per frame a stage handles.

    Disabled (path None) it costs one branch per frame. Enabled, rows go into a
    preallocated array and are saved as .npy when the stage closes.
    """

    def __init__(self, path: str | None, columns: int, capacity: int = 200_000) -> None:
        self.path = path
        self._rows = np.zeros((capacity if path else 0, columns), dtype=np.int64)
        self._n = 0

    def add(self, *values: int) -> None:
        if self.path is not None and self._n < len(self._rows):
            self._rows[self._n, : len(values)] = values
            self._n += 1

    def save(self) -> None:
        if self.path is not None:
            np.save(self.path, self._rows[: self._n])
