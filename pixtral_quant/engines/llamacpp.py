"""Run a GGUF output (text model + mmproj) in llama.cpp itself, through llama-cpp-python: teacher-forced logits
and greedy generations on exactly the token ids mistral-common encodes.

    from pixtral_quant.engines import llamacpp as engine
    with engine.GgufModel(text_gguf, mmproj_gguf, n_ctx=512, ids=engine.ImageIds(img, brk, end)) as model:
        logits, generated = model.run(tokens, images, answer_start=s, max_new_tokens=8, eos=2)

Why the low-level API and not `MTMDChatHandler`: the chat handler renders the GGUF's chat template to text and
lets llama.cpp tokenize it (e.g. the tiny model's template puts "\\n\\n" after the image block, which
mistral-common does not), so its prompts are not the reference's. Here the text tokens are mistral-common's ids,
decoded as they are, and only each image block comes from mtmd (`mtmd_tokenize` of the media marker with one
bitmap gives the image chunk; mtmd runs the vision tower + projector on it).

What mtmd puts in a Pixtral image chunk (tools/mtmd/models/pixtral.cpp, mtmd.cpp at llama.cpp 0c1e57098):
the rows of patch embeddings with the `v.token_embd.img_break` row ([IMG_BREAK]'s text embedding) after every row
but the last — nx·ny + ny − 1 positions, i.e. mistral-common's block [IMG]…[IMG_BREAK]…[IMG] without its final
[IMG_END]; mtmd adds "[IMG_END]" as a separate text chunk. So each block of `tokens` is split as: the chunk
replaces [IMG]…last [IMG], and [IMG_END] is decoded as a text token (`image_spans`). The chunk's size is checked
against the block: llama.cpp sizes images itself (sides rounded to the nearest multiple of 16, and at least
`image_min_tokens` patches: 8 by default for Pixtral, so a 32×32 image — 4 patches — would be upscaled to 48×48;
we pass image_min_tokens=1 so small images keep mistral-common's grid). A different size raises ImageGridError.
The chunk is encoded (`mtmd_encode_chunk`), its [IMG_BREAK] rows set to the mmproj's img_break row (`_encode`:
mtmd's graph leaves them to uninitialised memory × 0, which is NaN now and then), and decoded
(`mtmd_helper_decode_image_chunk`) into the same KV cache as the text.

Logits: llama.cpp returns every vocabulary entry (float32), so the teacher-forced metrics are exact. Greedy
generation reuses the teacher-forced pass: the logits at `answer_start` give the first token, the KV cache past it
is dropped, and decoding continues one token at a time (argmax, stop at `eos`).

llama.cpp's and clip's log lines go to a callback that keeps the last errors for the exception messages and prints
nothing; `close()` (or the context manager) frees everything explicitly (Llama.__del__ at interpreter exit fails).
"""

from __future__ import annotations

import ctypes
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, PixtralQuantError, require

EXTRA = "llamacpp"  # the pip extra that installs llama-cpp-python
LOG_ERROR = 3  # ggml_log_level GGML_LOG_LEVEL_ERROR
_errors: deque[str] = deque(maxlen=20)  # llama.cpp's last error lines, for our messages
_callback = None  # the ctypes log callback (kept referenced: llama.cpp holds a raw pointer to it)


class LlamaCppError(PixtralQuantError):
    """llama.cpp failed on a file or a prompt; the message carries its last error lines."""


class ImageGridError(LlamaCppError):
    """llama.cpp gave an image a different number of tokens from mistral-common's block."""


@dataclass(frozen=True)
class ImageIds:
    """The tokenizer's [IMG], [IMG_BREAK] and [IMG_END] ids."""

    img: int
    brk: int
    end: int


def check_available():
    """llama_cpp (with its mtmd bindings) importable, else MissingDependencyError naming the pip extra."""
    require("llama_cpp", EXTRA)
    return require("llama_cpp.mtmd_cpp", EXTRA)


def threads() -> int:
    """CPU threads llama.cpp may use: the cores this process is allowed to run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def image_spans(tokens: list[int], ids: ImageIds) -> list[tuple[int, int]]:
    """[start, end) of each image block's mtmd chunk in `tokens`: the first [IMG] of a block up to (not including)
    its [IMG_END]. Pure; ValueError for a block without [IMG_END]."""
    spans, i = [], 0
    while i < len(tokens):
        if tokens[i] != ids.img:
            i += 1
            continue
        j = i
        while j < len(tokens) and tokens[j] in (ids.img, ids.brk):
            j += 1
        if j == len(tokens) or tokens[j] != ids.end:
            raise ValueError(f"the image block at token {i} does not end with [IMG_END]")
        spans.append((i, j))
        i = j + 1
    return spans


def grid(span_tokens: list[int], ids: ImageIds) -> tuple[int, int]:
    """(columns, rows) of an image block's patch grid from its tokens ([IMG] × nx, [IMG_BREAK], ..., [IMG] × nx)."""
    rows = span_tokens.count(ids.brk) + 1
    return (len(span_tokens) - rows + 1) // rows, rows


def img_break_row(mmproj: Path) -> np.ndarray:
    """float32 [n_embd]: the mmproj's `v.token_embd.img_break` tensor (read with the gguf package)."""
    from ..export.gguf.names import img_break_name

    gguf = require("gguf", "gguf")
    name = img_break_name()
    found = [t for t in gguf.GGUFReader(mmproj).tensors if t.name == name]
    if not found:
        raise InputError(f"the mmproj has no {name} tensor (llama.cpp needs it for Pixtral)", where=mmproj,
                         fix="convert it again with pixtral-quant convert --scheme gguf-...")
    return np.array(found[0].data, dtype=np.float32).reshape(-1)  # a copy: the reader's data is a memmap


def _quiet() -> None:
    """Route llama.cpp's and mtmd/clip's logs to a callback that prints nothing and keeps the errors."""
    global _callback
    if _callback is not None:
        return
    llama_cpp, mtmd = require("llama_cpp", EXTRA), check_available()

    @llama_cpp.llama_log_callback
    def keep_errors(level, text, user_data):
        if level == LOG_ERROR and text:
            _errors.append(text.decode("utf-8", "replace").strip())

    _callback = keep_errors
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(_callback, ctypes.c_void_p(0))


def _last_errors() -> str:
    text = "; ".join(e for e in _errors if e)
    _errors.clear()
    return f" (llama.cpp: {text})" if text else ""


class GgufModel:
    """A text GGUF (+ an mmproj for image prompts) loaded in llama.cpp. n_ctx: the longest sequence it will run
    (prompt + generated tokens); ids: the image token ids (needed when prompts have images)."""

    def __init__(self, text: str | Path, mmproj: str | Path | None, n_ctx: int, ids: ImageIds | None = None,
                 n_threads: int | None = None):
        _quiet()
        self.llama_cpp, self.mtmd = require("llama_cpp", EXTRA), check_available()
        self.ids, self.n_ctx = ids, int(n_ctx)
        self.llm = self.mtmd_ctx = self.batch = None
        n_threads = n_threads or threads()
        try:
            self.llm = self.llama_cpp.Llama(model_path=str(text), n_ctx=self.n_ctx, n_threads=n_threads,
                                            n_threads_batch=n_threads, verbose=False)
        except ValueError as exc:
            raise LlamaCppError(f"llama.cpp cannot load this text model: {exc}{_last_errors()}", where=text,
                                fix="convert it again with pixtral-quant convert --scheme gguf-...") from None
        try:
            if mmproj is not None:
                self.mtmd_ctx = self._open_mmproj(Path(mmproj), n_threads)
                self.img_break = img_break_row(Path(mmproj))
            self.n_vocab = self.llama_cpp.llama_vocab_n_tokens(self.llama_cpp.llama_model_get_vocab(self.llm.model))
            self.n_embd = self.llama_cpp.llama_model_n_embd(self.llm.model)
            self.n_batch = self.llm.n_batch
            self.batch = self.llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        except BaseException:
            self.close()
            raise

    def _open_mmproj(self, path: Path, n_threads: int):
        params = self.mtmd.mtmd_context_params_default()
        params.use_gpu, params.print_timings, params.warmup = False, False, False
        params.n_threads = n_threads
        params.image_min_tokens = 1  # keep mistral-common's grid for small images (module docstring)
        ctx = self.mtmd.mtmd_init_from_file(str(path).encode(), self.llm.model, params)
        if not ctx:
            raise LlamaCppError(f"llama.cpp cannot load this mmproj{_last_errors()}", where=path,
                                fix="convert it again with pixtral-quant convert --scheme gguf-...")
        return ctx

    def close(self) -> None:
        """Free the mtmd context, the batch and the model (idempotent)."""
        if self.mtmd_ctx is not None:
            self.mtmd.mtmd_free(self.mtmd_ctx)
            self.mtmd_ctx = None
        if self.batch is not None:
            self.llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if self.llm is not None:
            self.llm.close()
            self.llm = None

    def __enter__(self) -> "GgufModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- one sequence ---------------------------------------------------------------------------------------

    def run(self, tokens: list[int], images: list, answer_start: int, max_new_tokens: int, eos: int):
        """Teacher-forced logits float32 [A, V] at positions answer_start .. len(tokens) − 2 (A = len − 1 −
        answer_start: each predicts the next token), and the greedy continuation of tokens[: answer_start + 1]
        (int ids, without the final `eos`). images: PIL images in the order of their blocks in `tokens`."""
        if not answer_start < len(tokens) - 1:
            raise ValueError("the conversation has no answer tokens after answer_start")
        logits = self.logits(tokens, images, range(answer_start, len(tokens) - 1))
        return logits, self._greedy(int(logits[0].argmax()), answer_start + 1, max_new_tokens, eos)

    def logits(self, tokens: list[int], images: list, positions) -> np.ndarray:
        """float32 [len(positions), V]: the logits at those positions of `tokens` (all text positions), after
        decoding the whole sequence from an empty cache."""
        if len(tokens) + 1 > self.n_ctx:
            raise LlamaCppError(f"a sequence of {len(tokens)} tokens does not fit n_ctx={self.n_ctx}",
                                fix="open the model with a larger n_ctx")
        self._clear()
        want, rows = sorted(set(positions)), {}
        spans = image_spans(tokens, self.ids) if self.ids is not None else []
        if len(spans) != len(images):
            raise InputError(f"{len(images)} image(s) for {len(spans)} image block(s) in the prompt",
                             fix="pass the images of the conversation, in the order of their [IMG] blocks")
        pos = 0
        for (start, end), image in zip(spans, images):
            rows.update(self._text(tokens[pos:start], pos, want))
            self._image(tokens[start:end], image, start)
            pos = end
        rows.update(self._text(tokens[pos:], pos, want))
        missing = [p for p in want if p not in rows]
        if missing:
            raise ValueError(f"positions {missing[:5]} are inside image blocks: llama.cpp gives no logits there")
        return np.stack([rows[p] for p in want]) if want else np.zeros((0, self.n_vocab), np.float32)

    def _clear(self) -> None:
        self.llama_cpp.llama_memory_clear(self.llama_cpp.llama_get_memory(self.llm.ctx), True)

    def _text(self, tokens: list[int], pos0: int, want: list[int]) -> dict[int, np.ndarray]:
        """Decode text tokens at positions pos0 …, n_batch at a time; {position: logits} for those in `want`."""
        rows, wanted = {}, set(want)
        for off in range(0, len(tokens), self.n_batch):
            part = tokens[off: off + self.n_batch]
            b = self.batch
            b.n_tokens = len(part)
            for k, tok in enumerate(part):
                b.token[k], b.pos[k], b.n_seq_id[k], b.seq_id[k][0] = tok, pos0 + off + k, 1, 0
                b.logits[k] = (pos0 + off + k) in wanted
            if self.llama_cpp.llama_decode(self.llm.ctx, b) != 0:
                raise LlamaCppError(f"llama_decode failed{_last_errors()}", fix="report this with the GGUF files")
            for k in range(len(part)):
                if b.logits[k]:
                    ptr = self.llama_cpp.llama_get_logits_ith(self.llm.ctx, k)
                    rows[pos0 + off + k] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        return rows

    def _image(self, span_tokens: list[int], image, pos0: int) -> None:
        """Encode one image with mtmd and decode its chunk at positions pos0 … pos0 + len(span_tokens) − 1.
        ImageGridError when llama.cpp's grid differs from the block's."""
        if self.mtmd_ctx is None:
            raise InputError("the prompt has an image but no mmproj was loaded",
                             fix="pass the GGUF folder's mmproj-model.gguf")
        chunks, bitmap = self.mtmd.mtmd_input_chunks_init(), self._bitmap(image)
        try:
            chunk = self._image_chunk(chunks, bitmap)
            got = self.mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            if got != len(span_tokens):
                raise ImageGridError(
                    f"llama.cpp gives a {image.width}×{image.height} image {got} image tokens; mistral-common's "
                    f"block has {len(span_tokens)} (a {grid(span_tokens, self.ids)} patch grid, [IMG_BREAK]s "
                    "included)", fix="compare on images whose sides are multiples of 16 and within the model's "
                    "image size (llama.cpp resizes the others differently)")
            embd = self._encode(chunk, span_tokens)
            new_pos = self.llama_cpp.llama_pos(0)
            ptr = embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            if self.mtmd.mtmd_helper_decode_image_chunk(self.mtmd_ctx, self.llm.ctx, chunk, ptr, pos0, 0,
                                                        self.n_batch, ctypes.byref(new_pos),
                                                        self.mtmd.mtmd_helper_post_decode_callback(), None) != 0:
                raise LlamaCppError(f"llama.cpp could not decode an image's embeddings{_last_errors()}",
                                    fix="report this with the GGUF files")
        finally:
            self.mtmd.mtmd_input_chunks_free(chunks)
            self.mtmd.mtmd_bitmap_free(bitmap)

    def _encode(self, chunk, span_tokens: list[int]) -> np.ndarray:
        """The chunk's image through the vision tower + projector (mtmd): float32 [len(span_tokens), n_embd].

        The [IMG_BREAK] rows are set to the mmproj's `v.token_embd.img_break` row here. That is the value mtmd's
        graph computes for them (tools/mtmd/models/pixtral.cpp: a new, uninitialised tensor scaled by 0, plus
        that row), except that the tensor is never initialised, and when its memory holds NaN or Inf bits,
        0 · NaN = NaN: we saw whole rows of NaN in about 1 run in 4 (llama.cpp 0c1e57098, CPU, no warm-up),
        and then every later logit is NaN. Writing the row itself gives llama.cpp's intended result exactly."""
        if self.mtmd.mtmd_encode_chunk(self.mtmd_ctx, chunk) != 0:
            raise LlamaCppError(f"mtmd could not encode an image{_last_errors()}", fix="report this with the mmproj")
        out = np.ctypeslib.as_array(self.mtmd.mtmd_get_output_embd(self.mtmd_ctx),
                                    shape=(len(span_tokens), self.n_embd)).copy()
        out[np.asarray(span_tokens) == self.ids.brk] = self.img_break
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if len(bad):
            raise LlamaCppError(f"llama.cpp's image embeddings are not finite at rows {bad.tolist()[:8]} of "
                                f"{len(out)}", fix="check the mmproj's weights (convert it again)")
        return out

    def _bitmap(self, image):
        """An mtmd bitmap of the image's RGB bytes, converted as mistral-common converts (alpha over white)."""
        from mistral_common.tokens.tokenizers.image import _convert_to_rgb  # mistral-common's own conversion

        rgb = np.ascontiguousarray(np.asarray(_convert_to_rgb(image), dtype=np.uint8))
        data = rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        return self.mtmd.mtmd_bitmap_init(rgb.shape[1], rgb.shape[0], data)  # copies the pixels

    def _image_chunk(self, chunks, bitmap):
        """The image chunk of mtmd's tokenization of the media marker alone (mtmd adds [IMG_END] as text after
        it, which we drop: `tokens` has its own)."""
        marker = self.mtmd.mtmd_default_marker()
        text = self.mtmd.mtmd_input_text()
        text.text, text.text_len, text.add_special, text.parse_special = marker, len(marker), False, True
        bitmaps = (self.mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        if self.mtmd.mtmd_tokenize(self.mtmd_ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
            raise LlamaCppError(f"mtmd could not tokenize an image{_last_errors()}", fix="report this")
        found = [self.mtmd.mtmd_input_chunks_get(chunks, i) for i in range(self.mtmd.mtmd_input_chunks_size(chunks))]
        images = [c for c in found if self.mtmd.mtmd_input_chunk_get_type(c) == self.mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE]
        if len(images) != 1:
            raise LlamaCppError(f"mtmd returned {len(images)} image chunks for one image", fix="report this")
        return images[0]

    def _greedy(self, first: int, pos: int, max_new_tokens: int, eos: int) -> list[int]:
        """Greedy continuation from `first` (the argmax at pos − 1), the cache cut back to pos."""
        mem = self.llama_cpp.llama_get_memory(self.llm.ctx)
        self.llama_cpp.llama_memory_seq_rm(mem, 0, pos, -1)
        out, tok = [], first
        while tok != eos and len(out) < max_new_tokens:
            out.append(tok)
            if len(out) == max_new_tokens or pos + 1 > self.n_ctx:
                break
            tok = int(self._text([tok], pos, [pos])[pos].argmax())
            pos += 1
        return out
