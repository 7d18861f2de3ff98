"""Training: the Trainer, its callbacks and run state."""

from descend.train.callbacks import CALLBACKS, Callback, MonitorCallback
from descend.train.logging import CSVLogger, TensorBoardLogger
from descend.train.metrics import METRICS
from descend.train.trainer import History, Trainer

__all__ = ["CALLBACKS", "Callback", "MonitorCallback"]
__all__ += ["CSVLogger", "History", "METRICS", "TensorBoardLogger", "Trainer"]
