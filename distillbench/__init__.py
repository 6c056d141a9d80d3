"""distillbench: one trainer for the knowledge-distillation tables."""

__version__ = "0.1.0"
