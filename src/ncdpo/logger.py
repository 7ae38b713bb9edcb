"""Metric logging: a CSV file (one row per iteration) and TensorBoard event files."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any


class Logger:
    """Writes each iteration's metrics to ``progress.csv`` and, optionally, TensorBoard.

    The CSV columns are fixed by the first row; a later row lacking a column leaves it empty. NaN values
    (e.g. no evaluation this iteration) are left empty in the CSV and skipped in TensorBoard.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "progress.csv"
        self._file = None
        self._writer: csv.DictWriter | None = None
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._writer is None:
            self._file = open(self.csv_path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=list(metrics), extrasaction="ignore")
            self._writer.writeheader()
        row = {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        self._writer.writerow(row)
        self._file.flush()  # type: ignore[union-attr]
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) and "/" in k:
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_csv(path: str | Path) -> dict[str, list[float]]:
    """Read a ``progress.csv`` into columns of floats (empty cells become NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                val = float(v) if v not in ("", None) else math.nan
            except ValueError:
                val = math.nan
            cols.setdefault(k, []).append(val)
    return cols
