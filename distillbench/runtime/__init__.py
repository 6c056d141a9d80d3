"""What every layer may use: seeding and the distributed helpers. Imports nothing of distillbench but its errors."""
