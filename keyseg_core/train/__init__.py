"""Training: validated config, mixed data stream, accelerate engine, atomic resumable checkpoints.

Entry points: `TrainConfig.from_file` and `train`; the CLI is `keyseg train` (docs/training.md).
"""

from keyseg_core.train.config import DataSource, OptimizerConfig, ScheduleConfig, TrainConfig
from keyseg_core.train.loop import learning_rate, train

__all__ = ["DataSource", "OptimizerConfig", "ScheduleConfig", "TrainConfig", "learning_rate", "train"]
