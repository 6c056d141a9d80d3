"""``python -m distillbench``: see ``distillbench.cli``.

The command line lives in an importable module so that launchers which ship the task function
to other processes (joblib, submitit) can pickle it by reference.
"""

from distillbench.cli import entry

if __name__ == "__main__":
    entry()
