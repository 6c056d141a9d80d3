"""distillbench: one trainer for the knowledge-distillation tables."""

__version__ = "0.1.0"

from distillbench import naming  # noqa: E402,F401 (registers the default run name for the configs)
