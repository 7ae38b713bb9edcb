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

    def __init__(
        self,
        run_dir: str | Path,
        tensorboard: bool = True,
        resume_iteration: int | None = None,
        resume_step: int = 0,
        key: str = "iteration",
    ) -> None:
        """With ``resume_iteration`` the log continues an earlier one: CSV rows after that iteration (written
        after the checkpoint being resumed) are dropped, and TensorBoard events after ``resume_step`` purged."""
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "progress.csv"
        self._file = None
        self._writer: csv.DictWriter | None = None
        self._tb = None
        if resume_iteration is not None and self.csv_path.is_file():
            self._truncate(resume_iteration, key)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_iteration is not None else None
            if purge is not None:
                _after_existing_event_files(self.run_dir / "tb")
            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)

    def _truncate(self, last: int, key: str) -> None:
        """Keep the header and the rows up to ``key == last``; reopen for appending with the same columns."""
        from ncdpo.checkpoint import atomic_write_bytes

        with open(self.csv_path, newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get(key) and int(float(r[key])) <= last]
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\r\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(self.csv_path, buf.getvalue().encode())
        self._file = open(self.csv_path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")

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
            self._tb.flush()  # like the CSV: on disk before any checkpoint, so a killed run loses no points

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def _after_existing_event_files(tb_dir: Path) -> None:
    """TensorBoard reads event files in name order, and names start with the creation second: wait (at most
    about a second) until a new file sorts after the existing ones, or its purge would hide their points."""
    import time

    stamps = []
    for f in tb_dir.glob("events.out.tfevents.*"):
        try:
            stamps.append(int(f.name.split(".")[3]))
        except (IndexError, ValueError):
            continue
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)


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
