"""Where metrics go: the console, files in the run directory, and W&B."""

from distillbench.loggers.base import LoggerGroup, RunInfo, RunLogger
from distillbench.loggers.console import ConsoleLogger
from distillbench.loggers.files import FileLogger, read_metrics
from distillbench.loggers.wandb_logger import WandbLogger

__all__ = ["ConsoleLogger", "FileLogger", "LoggerGroup", "RunInfo", "RunLogger", "WandbLogger", "read_metrics"]
