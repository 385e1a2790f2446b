"""What every conversion runs, whatever its scheme: the runtime helpers (runtime.py: progress, result, compute
device, calibration set, resume journal) and the one sequential calibration loop (sequential.py) whose per-layer
work GPTQ (gptq.py), gptq-mixed (mixed/calibrate.py) and the GGUF importance matrix (export/gguf/calibrate.py)
plug into. Below convert.py and cli/: nothing here imports them."""
