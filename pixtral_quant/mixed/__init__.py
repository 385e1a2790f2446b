"""gptq-mixed: measured-sensitivity mixed precision under a size budget (issue 14).

sensitivity.py  each Linear solved by GPTQ at every candidate setting from one Hessian (the losses + tensors)
allocate.py     the exact multiple-choice knapsack: one setting per Linear, least summed loss within the bytes
budget.py       the budget in checkpoint bytes: --max-size directly, --fit through plan's memory model
"""
