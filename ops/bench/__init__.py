"""Benchmarks of the runtime, each figure a ratio to a baseline measured in the same run (docs/performance.md).

    .venv/bin/python -m ops.bench            # every topic, prints the table, writes ops/bench/RESULTS.md
    .venv/bin/python -m ops.bench --quick    # small sizes: checks the harness itself, writes nothing unless --out
"""
