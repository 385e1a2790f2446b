"""gptq-mixed: measured-sensitivity mixed precision under a size budget (issue 14; docs/mixed.md).

sensitivity.py  MixedSolver: each Linear solved by GPTQ at every candidate setting from one Hessian; the
                sensitivity ½ Σ F·δ² from its per-row output errors (pure math)
fisher.py       the output-channel Fisher of every Linear: one backward pass streamed layer by layer
calibrate.py    the pipeline: calibration (capture.py) with MixedSolver, the Fisher probe, the sensitivities
choose.py       the knapsack's items (fused Linears share a setting), budget checks, the allocation
allocate.py     the exact multiple-choice knapsack (HiGHS), pure
budget.py       the budget in bytes: --max-size (checkpoint on disk) or --fit (plan's peak GPU memory)
The exporter that writes the compressed-tensors checkpoint is export/mixed.py.
"""
