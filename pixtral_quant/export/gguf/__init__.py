"""GGUF export for llama.cpp: the text model (arch `llama`), the vision side as an `mmproj` (arch `clip`), and
importance matrices, all written with the `gguf` package (optional: `pip install 'pixtral-quant[gguf]'`).

Modules, one concern each: `names` (runtime tensor name → GGUF name, q/k permutation), `dtypes` (output types and
llama.cpp's per-tensor type rules), `metadata` (GGUF key/values from the config and the tokenizer), `writer`
(streaming GGUF files from a Checkpoint), `imatrix` (importance-matrix accumulation and its GGUF file).
"""
