"""GGUF export for llama.cpp: the text model (arch `llama`), the vision side as an `mmproj` (arch `clip`), and
importance matrices, all written with the `gguf` package (optional: `pip install 'pixtral-quant[gguf]'`).

Modules, one concern each: `names` (runtime tensor name → GGUF name, q/k permutation), `dtypes` (output types and
llama.cpp's per-tensor type rules), `metadata` (GGUF key/values from the config and the tokenizer), `writer`
(streaming GGUF files from a Checkpoint), `imatrix` (importance-matrix accumulation and its GGUF file), `calibrate`
(the importance matrix through the full multimodal model), `quantize` (llama.cpp's own quantizer through
llama-cpp-python), `ktypes` (llama.cpp's per-tensor type choice, ported), `size` (byte-exact file sizes without
weights), `ftypes` (the type table), `layout` (the files of an output folder), `export` (convert's GGUF exporter).
"""
