"""Speed and memory benchmarks of the harness (not installed with it; run from the repository root,
e.g. ``python -m benchmarks.bench``). Their measured results and the commands behind them are in
``benchmarks/results/`` and docs/performance.md."""
