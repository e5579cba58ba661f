"""Per-step metrics: always metrics.csv (greppable, plottable, survives without extra packages),
plus TensorBoard when installed or asked for. On resume, CSV rows past the restored step are
dropped, since those steps are trained again."""

from __future__ import annotations

import csv
import math
from pathlib import Path

FIELDS = ["step", "lr", "loss", "ce", "bce", "dice", "keyword", "anchor", "grad_norm", "step_time_s", "samples"]


def _tensorboard_writer(folder: Path, backend: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        if backend == "tensorboard":
            raise RuntimeError("log_backend: 'tensorboard' but the tensorboard package is not installed") from exc
        return None
    return SummaryWriter(str(folder))


class MetricsLogger:
    """Writes one row per optimizer step; a no-op on non-main ranks."""

    def __init__(self, output_dir: Path, backend: str, resume_step: int, enabled: bool,
                 fields: list[str] | None = None) -> None:
        self.enabled = enabled
        self.fields = fields or FIELDS
        self.csv_path = output_dir / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        kept = self._rows_up_to(resume_step) if resume_step else []
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(kept)
        self.tb = None if backend == "csv" else _tensorboard_writer(output_dir / "tensorboard", backend)

    def _rows_up_to(self, step: int) -> list[dict]:
        if not self.csv_path.is_file():
            return []
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            return [row for row in csv.DictReader(f) if int(row["step"]) <= step]

    def log(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.fields).writerow({k: row.get(k, "") for k in self.fields})
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    self.tb.add_scalar(f"train/{key}", value, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
