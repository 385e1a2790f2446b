"""Bad input across every command, as one table: each case → its exit code (2 bad input, 1 a failed
threshold), exactly one `error: <where>: <message>` naming the file or field, a `fix:` line, no traceback,
and nothing written or changed anywhere the command could write.

The damaged fixtures are copies of the bundled tiny model (big files symlinked unless the case damages them).
Most cases run in-process through click's CliRunner; the rows marked `proc` run the real `pixtral-quant`
process (what a user sees, libraries imported for real). The output rows: a symlinked OUT, an OUT on a full
disk (a real 1 MiB tmpfs, mounted for the case: CI runs as root), and the run after a kill -9 during the write
(tests/test_reliability.py shows the resume that follows it and the swap's every instant).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from calibration_helpers import huge_png, image_bytes, sample_row, write_manifest
from pixtral_quant.assets import TINY_MODEL
from pixtral_quant.cli import main

WEIGHTS = "model.safetensors"
CLI = [sys.executable, "-c", "import sys; from pixtral_quant.cli import main; sys.exit(main())"]


# --- fixture builders: each returns a path under `tmp` ----------------------------------------------------

def tiny_copy(tmp: Path, name: str, *, skip=(), copy=()) -> Path:
    """The tiny model in tmp/name: files in `copy` copied (to be damaged), the rest symlinked, `skip` left out."""
    out = tmp / name
    out.mkdir()
    for f in sorted(TINY_MODEL.iterdir()):
        if f.is_file() and f.name not in skip:
            (shutil.copy(f, out / f.name) if f.name in copy or f.suffix == ".json" else
             (out / f.name).symlink_to(f))
    return out


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def safetensors_parts(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_safetensors(path: Path, header: dict, data: bytes, pad_to: int | None = None) -> None:
    blob = json.dumps(header).encode()
    blob += b" " * ((pad_to or len(blob)) - len(blob))  # the format allows trailing spaces in the header
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)


def model(tmp, damage: str) -> Path:
    """The tiny model with one thing wrong (see DAMAGE)."""
    return DAMAGE[damage](tmp)


def _truncated_data(tmp):
    d = tiny_copy(tmp, "truncated", copy=(WEIGHTS,))
    raw = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes(raw[: len(raw) * 3 // 5])
    return d


def _garbage_header(tmp):
    d = tiny_copy(tmp, "garbage-header", copy=(WEIGHTS,))
    raw = bytearray((d / WEIGHTS).read_bytes())
    raw[8:40] = b"\xff\xfe" * 16  # the header's first 32 bytes
    (d / WEIGHTS).write_bytes(bytes(raw))
    return d


def _header_length(tmp):
    d = tiny_copy(tmp, "header-length", copy=(WEIGHTS,))
    raw = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes((2**40).to_bytes(8, "little") + raw[8:])
    return d


def _dtype_vs_bytes(tmp):
    """Header and data disagree: one tensor declared F32 while its bytes are BF16 (half the length)."""
    d = tiny_copy(tmp, "dtype-vs-bytes", copy=(WEIGHTS,))
    header, data = safetensors_parts(d / WEIGHTS)
    n = int.from_bytes((TINY_MODEL / WEIGHTS).read_bytes()[:8], "little")
    header["language_model.model.norm.weight"]["dtype"] = "F32"
    write_safetensors(d / WEIGHTS, header, data, pad_to=n)
    return d


def _nan_data(tmp):
    """Valid layout, but one tensor's bytes overwritten with 0xFF (NaN in bf16/fp32): a damaged copy."""
    d = tiny_copy(tmp, "nan-data", copy=(WEIGHTS,))
    header, data = safetensors_parts(d / WEIGHTS)
    start, end = header["language_model.model.layers.0.mlp.down_proj.weight"]["data_offsets"]
    data = data[:start] + b"\xff" * (end - start) + data[end:]
    write_safetensors(d / WEIGHTS, header, data)
    return d


def _vocab_mismatch(tmp):
    d = tiny_copy(tmp, "vocab")
    edit_json(d / "config.json", lambda c: c["text_config"].update(vocab_size=32000))
    return d


def _more_layers(tmp):
    d = tiny_copy(tmp, "layers")
    edit_json(d / "config.json", lambda c: c["text_config"].update(num_hidden_layers=c["text_config"]
                                                                    ["num_hidden_layers"] + 1))
    return d


def _no_tokenizer(tmp):
    return tiny_copy(tmp, "no-tokenizer", skip=("tokenizer.model.v7m1", "tokenizer.json", "tekken.json"))


def _hf_tokenizer_only(tmp):
    d = tiny_copy(tmp, "hf-tokenizer", skip=("tokenizer.model.v7m1", "tokenizer.json"))
    (d / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}}}))
    return d


def _corrupt_tokenizer(tmp):
    d = tiny_copy(tmp, "bad-tokenizer", skip=("tokenizer.model.v7m1",))
    (d / "tokenizer.model.v7m1").write_bytes(b"\x00garbage" * 64)
    return d


def _plain_mistral(tmp):
    d = tiny_copy(tmp, "mistral")
    text = json.loads((d / "config.json").read_text())["text_config"]
    (d / "config.json").write_text(json.dumps({**text, "model_type": "mistral", "architectures":
                                               ["MistralForCausalLM"]}))
    return d


def _clip_llava(tmp):
    d = tiny_copy(tmp, "clip")
    edit_json(d / "config.json", lambda c: c.update(vision_config={"model_type": "clip_vision_model",
                                                                   "hidden_size": 1024}))
    return d


def _native_plain_mistral(tmp):
    """Mistral-native params.json with no vision_encoder: a text-only Mistral."""
    d = tmp / "native-text"
    d.mkdir()
    (d / "params.json").write_text(json.dumps({"dim": 256, "n_layers": 2, "head_dim": 64, "hidden_dim": 512,
                                               "n_heads": 4, "n_kv_heads": 2, "norm_eps": 1e-5,
                                               "vocab_size": 32768, "rope_theta": 1e6}))
    (d / "tokenizer.model.v7m1").symlink_to(TINY_MODEL / "tokenizer.model.v7m1")
    return d


def _config_not_json(tmp):
    d = tiny_copy(tmp, "config-garbage")
    (d / "config.json").write_text('{"model_type": "llava", ')
    return d


def _pickle_only(tmp):
    d = tiny_copy(tmp, "pickle", skip=(WEIGHTS,))
    (d / "pytorch_model.bin").write_bytes(b"PK\x03\x04")
    return d


def _missing_shard(tmp):
    d = tiny_copy(tmp, "sharded", skip=(WEIGHTS,))
    header, _ = safetensors_parts(TINY_MODEL / WEIGHTS)
    names = sorted(k for k in header if k != "__metadata__")
    (d / "model-00001-of-00002.safetensors").symlink_to(TINY_MODEL / WEIGHTS)
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: f"model-0000{1 + (i % 2)}-of-00002.safetensors" for i, n in enumerate(names)}}))
    return d


def _empty_dir(tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _a_file(tmp):
    (tmp / "model.txt").write_text("not a model\n")
    return tmp / "model.txt"


DAMAGE = {f.__name__[1:]: f for f in (
    _truncated_data, _garbage_header, _header_length, _dtype_vs_bytes, _nan_data, _vocab_mismatch, _more_layers,
    _no_tokenizer, _hf_tokenizer_only, _corrupt_tokenizer, _plain_mistral, _clip_llava, _native_plain_mistral,
    _config_not_json, _pickle_only, _missing_shard, _empty_dir, _a_file)}


def text_file(tmp, name: str, text: str) -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def manifest(tmp, rows, images=None) -> Path:
    return write_manifest(tmp / "set", rows, images)


def image_manifest(tmp, name: str, data: bytes) -> Path:
    return manifest(tmp, [sample_row("ok", "hi"), sample_row("bad", {"path": f"images/{name}"})], {name: data})


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def corrupt_jpeg() -> bytes:
    good = image_bytes("RGB", (64, 48), "JPEG")
    return good[:2] + b"\x00" * 300 + good[302:]


def captions_folder(tmp) -> Path:
    """Two images, captions for one."""
    folder = tmp / "folder"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(image_bytes("RGB", (32, 32), "PNG"))
    (folder / "captions.tsv").write_text("a.png\ta red square\n")
    return folder


def non_empty_dir(tmp) -> Path:
    (tmp / "out").mkdir()
    text_file(tmp / "out", "keep.txt", "an earlier result")
    return tmp / "out"


def convert(*args) -> Callable[[Path], list[str]]:
    return lambda tmp: ["convert", "--scheme", "rtn-int4", "--out", str(tmp / "out"), *args]


def convert_model(damage: str, scheme: str = "rtn-int4", *extra) -> Callable[[Path], list[str]]:
    return lambda tmp: ["convert", "--scheme", scheme, "--model", str(model(tmp, damage)), "--out",
                        str(tmp / "out"), *extra]


def calib(build: Callable[[Path], Path], *extra) -> Callable[[Path], list[str]]:
    return lambda tmp: ["calib", "inspect", str(build(tmp)), "--tokenizer", "v7m1", *extra]


def recipe_file(text: str) -> Callable[[Path], str]:
    return lambda tmp: str(text_file(tmp, "recipe.yaml", text))


RTN_CANDIDATE = "rtn-candidate"  # a real converted checkpoint, made once per module (validate / bench rows)


def symlinked_out(tmp) -> Path:
    (tmp / "real").mkdir()
    (tmp / "link").symlink_to(tmp / "real")
    return tmp / "link"


def killed_mid_write(tmp) -> Path:
    """OUT.partial as a conversion killed with SIGKILL after its first decoder layer leaves it; returns OUT."""
    import signal
    import time

    out = tmp / "out"
    state = tmp / "out.partial" / ".resume" / "state.json"
    proc = subprocess.Popen([*CLI, "convert", "--scheme", "gptq-int4", "--calibration", "tiny", "--num-samples", "24",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (state.is_file() and json.loads(state.read_text())["units"]):
        assert proc.poll() is None and time.monotonic() < deadline, "the conversion was not killed mid-write"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return out


# --- the table --------------------------------------------------------------------------------------------
# (case id, argv builder (tmp → argv; "{candidate}" is replaced by RTN_CANDIDATE's path, "{killed}" by the OUT of
#  killed_mid_write, "{small}" by a tmpfs), exit code, a substring of the first line that explains the error (not
#  only a word of the argv), run as a real process)

@dataclass(frozen=True)
class Case:
    """first: the error is the first thing printed (False: found while the weights stream, after the plan)."""

    id: str
    argv: Callable[[Path], list[str]]
    code: int
    first_line: str
    proc: bool = False
    first: bool = True
    tmpfs_mib: int | None = None  # mount a tmpfs this big at <case>/small before building the argv


CASES = [
    # model directories (convert, inspect, plan, synth, bench)
    Case("safetensors-truncated-data", convert_model("truncated_data"), 2, "ends at byte", proc=True),
    Case("safetensors-garbage-header", convert_model("garbage_header"), 2, "header is not valid JSON"),
    Case("safetensors-header-length", convert_model("header_length"), 2, "the header claims"),
    Case("safetensors-dtype-vs-bytes", convert_model("dtype_vs_bytes"), 2, "language_model.model.norm.weight"),
    Case("safetensors-nan-data", convert_model("nan_data"), 2, "non-finite", first=False),
    Case("config-vocab-vs-weights", convert_model("vocab_mismatch"), 2, "has shape [32768, 256]"),
    Case("config-more-layers-than-weights", convert_model("more_layers"), 2, "missing tensors"),
    Case("missing-tokenizer", convert_model("no_tokenizer"), 2, "no tokenizer file found"),
    Case("hf-tokenizer-only-gptq", convert_model("hf_tokenizer_only", "gptq-int4"), 2, "tokenizer.json"),
    Case("corrupt-tokenizer-gptq", convert_model("corrupt_tokenizer", "gptq-int4"), 2, "cannot read the tokenizer"),
    Case("plain-mistral-config", convert_model("plain_mistral"), 2, "model_type is 'mistral', not 'llava'"),
    Case("llava-with-clip-tower", convert_model("clip_llava"), 2, "the vision tower is clip_vision_model"),
    Case("native-without-vision-encoder", lambda tmp: ["inspect", str(model(tmp, "native_plain_mistral"))], 2,
         "vision_encoder"),
    Case("config-not-json", lambda tmp: ["inspect", str(model(tmp, "config_not_json"))], 2, "cannot parse the JSON"),
    Case("pickle-weights-only", convert_model("pickle_only"), 2, "only PyTorch pickle weights"),
    Case("index-lists-missing-shard", convert_model("missing_shard"), 2, "shards listed in the index are missing"),
    Case("model-dir-empty", convert_model("empty_dir"), 2, "neither config.json"),
    Case("model-is-a-file", convert_model("a_file"), 2, "this is a file, not a model directory"),
    Case("model-does-not-exist", lambda tmp: ["convert", "--model", str(tmp / "nope"), "--out", str(tmp / "out")],
         2, "no such directory", proc=True),
    Case("config-only-model-convert", convert("--model", "pixtral-12b"), 2, "no weights"),
    # recipes and options (convert)
    Case("recipe-unknown-key", lambda tmp: ["convert", "--recipe", recipe_file(
        "scheme: {name: rtn-int4}\ncalibraton: {num_samples: 4}\n")(tmp), "--out", str(tmp / "out")], 2,
         "unknown key(s) ['calibraton']"),
    Case("recipe-not-yaml", lambda tmp: ["convert", "--recipe", recipe_file("scheme: [rtn-int4\n")(tmp), "--out",
                                         str(tmp / "out")], 2, "not valid YAML"),
    Case("recipe-wrong-type", lambda tmp: ["convert", "--recipe", recipe_file(
        "scheme: {name: gptq-int4, bits: four}\n")(tmp), "--out", str(tmp / "out")], 2, "'four' is not an int"),
    Case("recipe-does-not-exist", lambda tmp: ["convert", "--recipe", "no-such-recipe", "--out", str(tmp / "out")],
         2, "no such recipe"),
    Case("recipe-and-scheme", lambda tmp: ["convert", "--recipe", "tiny-gptq-int4", "--scheme", "rtn-int4",
                                           "--out", str(tmp / "out")], 2, "--recipe and --scheme both given"),
    Case("num-samples-zero", convert("--num-samples", "0"), 2, "--num-samples"),
    Case("num-samples-not-a-number", convert("--num-samples", "many"), 2, "'many' is not a valid integer"),
    Case("num-samples-above-set", lambda tmp: ["convert", "--scheme", "gptq-int4", "--num-samples", "100000",
                                               "--out", str(tmp / "out")], 2, "--num-samples 100000 but the set has"),
    Case("group-size-not-dividing", convert("--group-size", "100"), 2, "group size 100 does not divide"),
    Case("damp-negative", lambda tmp: ["convert", "--scheme", "gptq-int4", "--damp", "-0.5", "--out",
                                       str(tmp / "out")], 2, "damp_percent: -0.5 is out of range"),
    Case("unknown-scheme", convert("--scheme", "awq-int4"), 2, "--scheme: unknown scheme 'awq-int4'"),
    Case("unknown-gguf-type", convert("--scheme", "gguf-q9_k"), 2,
         "--scheme: unknown scheme 'gguf-q9_k': llama.cpp has no type 'q9_k'"),
    Case("calibration-empty-manifest", lambda tmp: ["convert", "--scheme", "gptq-int4", "--calibration",
                                                    str(manifest(tmp, [])), "--out", str(tmp / "out")], 2,
         "the manifest has no samples"),
    Case("calibration-does-not-exist", lambda tmp: ["convert", "--scheme", "gptq-int4", "--calibration",
                                                    str(tmp / "nope.jsonl"), "--out", str(tmp / "out")], 2,
         "no such calibration set"),
    Case("out-is-a-file", lambda tmp: ["convert", "--scheme", "rtn-int4", "--out",
                                       str(text_file(tmp, "out", "x"))], 2, "is a file"),
    Case("out-is-a-symlink", lambda tmp: ["convert", "--scheme", "rtn-int4", "--out", str(symlinked_out(tmp))], 2,
         "is a symbolic link"),
    Case("out-on-a-full-disk", lambda tmp: ["convert", "--scheme", "rtn-int4", "--out", "{small}/out"], 2,
         "not enough free disk space", tmpfs_mib=1),
    Case("rerun-after-kill-9-mid-write", lambda tmp: ["convert", "--scheme", "gptq-int4", "--calibration", "tiny",
                                                      "--num-samples", "24", "--out", "{killed}"],
         2, "an interrupted conversion left this folder", proc=True),
    Case("out-not-empty", lambda tmp: ["convert", "--scheme", "rtn-int4", "--out", str(non_empty_dir(tmp))], 2,
         "exists and is not empty"),
    # calibration sets (calib inspect)
    Case("image-corrupt-jpeg", calib(lambda tmp: image_manifest(tmp, "x.jpg", corrupt_jpeg())), 2,
         "not a readable image: corrupt, truncated or an unknown format"),
    Case("image-truncated-png", calib(lambda tmp: image_manifest(
        tmp, "x.png", image_bytes("RGB", (64, 64), "PNG", compress_level=0)[:3000])), 2, "truncated"),
    Case("image-tiff-unsupported", calib(lambda tmp: image_manifest(tmp, "x.tif", image_bytes("RGB", (8, 8), "TIFF"))),
         2, "a TIFF image; Pixtral inputs are JPEG, PNG, WebP or GIF"),
    Case("image-pdf-renamed", calib(lambda tmp: image_manifest(tmp, "x.png", b"%PDF-1.4\n%\xe2\xe3\n")), 2,
         "a PDF document"),
    Case("image-20000x20000-png", calib(lambda tmp: image_manifest(tmp, "x.png", huge_png(20000, 20000))), 2,
         "decompression-bomb"),
    Case("image-empty-file", calib(lambda tmp: image_manifest(tmp, "x.png", b"")), 2, "0 bytes"),
    Case("image-missing", calib(lambda tmp: manifest(tmp, [sample_row("bad", {"path": "images/gone.png"})])), 2,
         "does not exist"),
    Case("path-escapes-manifest-folder", calib(lambda tmp: manifest(
        tmp, [sample_row("bad", {"path": "../../etc/passwd"})])), 2, "outside the manifest folder"),
    Case("calibration-set-empty", calib(lambda tmp: manifest(tmp, [])), 2, "the manifest has no samples"),
    Case("manifest-roles-out-of-order", calib(lambda tmp: manifest(tmp, [
        {"id": "bad", "messages": [{"role": "assistant", "content": "x"}]}])), 2, "out of order"),
    Case("manifest-unknown-key", calib(lambda tmp: manifest(tmp, [{**sample_row("bad", "hi"), "imgs": []}])), 2,
         "unknown key(s) ['imgs']"),
    Case("folder-image-without-caption", calib(captions_folder), 2, "captions.tsv: 1 image(s) have no caption: ['b.png']"),
    Case("hf-path-not-a-dataset", lambda tmp: ["calib", "inspect", f"hf:{text_file(tmp, 'x.txt', 'x').parent}",
                                               "--tokenizer", "v7m1", "--image-column", "image", "--text-column",
                                               "caption"], 2, "not a dataset saved with save_to_disk"),
    Case("hf-without-columns", lambda tmp: ["calib", "inspect", f"hf:{tmp}", "--tokenizer", "v7m1"], 2,
         "a hf: dataset needs --image-column and --text-column"),
    Case("tokenizer-does-not-exist", lambda tmp: ["calib", "inspect", "eval", "--tokenizer",
                                                  str(tmp / "nope.json")], 2, "no such tokenizer"),
    Case("max-tokens-drops-everything", calib(lambda tmp: manifest(tmp, [sample_row("a", "hi there")]),
                                              "--max-tokens", "2"), 2, "no sample is left"),
    # plan
    Case("plan-gpu-memory-garbage", lambda tmp: ["plan", "--recipe", "pixtral-12b-int4", "--gpu-memory", "lots"],
         2, "cannot read 'lots' as a size", proc=True),
    Case("plan-image-size-garbage", lambda tmp: ["plan", "--recipe", "pixtral-12b-int4", "--image-size", "1024"],
         2, "'1024' is not an image size"),
    Case("plan-model-does-not-exist", lambda tmp: ["plan", "--recipe", "pixtral-12b-int4", "--model",
                                                   str(tmp / "nope")], 2, "no such directory"),
    Case("plan-target-the-scheme-cannot-write", lambda tmp: ["plan", "--recipe", str(text_file(
        tmp, "r.yaml", "scheme: {name: gptq-int4}\ntargets: {decoder: true, lm_head: auto}\n")), "--model", "tiny"],
         2, "cannot write the lm_head as auto"),
    # a card too small is plan's answer, not bad input: tests/test_memory_plan.py
    # validate
    Case("validate-candidate-does-not-exist", lambda tmp: ["validate", "--candidate", str(tmp / "nope")], 2,
         "no such directory"),
    Case("validate-candidate-corrupt", lambda tmp: ["validate", "--candidate", str(model(tmp, "truncated_data"))],
         2, "ends at byte"),
    Case("thresholds-unknown-key", lambda tmp: ["validate", "--candidate", "{candidate}", "--thresholds", str(
        text_file(tmp, "t.yaml", "max_mean_kl: 0.1\nmax_kl_p99: 0.2\n"))], 2, "t.yaml: unknown key(s) ['max_kl_p99']"),
    Case("thresholds-not-a-number", lambda tmp: ["validate", "--candidate", "{candidate}", "--thresholds", str(
        text_file(tmp, "t.yaml", "max_mean_kl: low\n"))], 2, "max_mean_kl"),
    Case("thresholds-not-yaml", lambda tmp: ["validate", "--candidate", "{candidate}", "--thresholds", str(
        text_file(tmp, "t.yaml", "max_mean_kl: [0.1\n"))], 2, "t.yaml: not valid YAML"),
    Case("thresholds-file-missing", lambda tmp: ["validate", "--candidate", "{candidate}", "--thresholds",
                                                 str(tmp / "nope.yaml")], 2, "nope.yaml: no such thresholds file"),
    Case("baseline-not-json", lambda tmp: ["validate", "--candidate", "{candidate}", "--baseline",
                                           str(text_file(tmp, "base.json", "{not json"))], 2, "base.json: not JSON"),
    Case("eval-set-empty", lambda tmp: ["validate", "--candidate", "{candidate}", "--eval",
                                        str(manifest(tmp, []))], 2, "the manifest has no samples"),
    # synth
    Case("synth-config-does-not-exist", lambda tmp: ["synth", "--config", str(tmp / "nope"), "--out",
                                                     str(tmp / "out")], 2, "nope: no such directory"),
    Case("synth-out-not-empty", lambda tmp: ["synth", "--config", "tiny", "--layers", "1", "--out",
                                             str(text_file(tmp, "f", "x").parent)], 2, "not empty"),
    Case("synth-layers-zero", lambda tmp: ["synth", "--config", "tiny", "--layers", "0", "--out",
                                           str(tmp / "out")], 2, "at least one decoder layer"),
    Case("synth-plain-mistral-config", lambda tmp: ["synth", "--config", str(model(tmp, "plain_mistral")), "--out",
                                                    str(tmp / "out")], 2, "model_type is 'mistral'"),
    # bench
    Case("bench-checkpoint-does-not-exist", lambda tmp: ["bench", str(tmp / "nope"), "--device", "cpu"], 2,
         "no such directory"),
    Case("bench-config-only", lambda tmp: ["bench", "pixtral-12b", "--device", "cpu"], 2, "no weights"),
    Case("bench-truncated-weights", lambda tmp: ["bench", str(model(tmp, "truncated_data")), "--device", "cpu"], 2,
         "ends at byte"),
    Case("bench-image-size-garbage", lambda tmp: ["bench", "{candidate}", "--image-size", "big"], 2,
         "'big' is not an image size"),
    Case("bench-unknown-device", lambda tmp: ["bench", "{candidate}", "--device", "tpu"], 2, "is not a device torch knows"),
]


# --- the check ----------------------------------------------------------------------------------------------

def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under roots (symlinks not followed) → (kind, size, sha256 of files under 1 MB else mtime)."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                st = p.lstat()
                if p.is_symlink():
                    out[str(p)] = ("link", os.readlink(p))
                elif p.is_dir():
                    out[str(p)] = ("dir",)
                else:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size < 2**20 else st.st_mtime_ns
                    out[str(p)] = ("file", st.st_size, digest)
    return out


@pytest.fixture(scope="module")
def candidate(tmp_path_factory):
    """An rtn-int4 conversion of the tiny model (validate and bench rows need a real checkpoint)."""
    out = tmp_path_factory.mktemp("bad-inputs") / RTN_CANDIDATE
    result = CliRunner().invoke(main, ["convert", "--scheme", "rtn-int4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def run(argv: list[str], proc: bool, env: dict[str, str]) -> tuple[int, str]:
    if proc:
        done = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=600, env={**os.environ, **env})
        return done.returncode, done.stdout + done.stderr
    result = CliRunner().invoke(main, argv, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a failure of the case, shown as such
    return result.exit_code, result.output


def mount_tmpfs(path: Path, mib: int, request) -> None:
    """A real size-limited file system (root only: CI and the dev machines run as root), unmounted afterwards."""
    assert os.geteuid() == 0, "mounting a tmpfs needs root"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", str(path)], check=True))


ERROR_LINE = re.compile(r"^error: .+$", re.M)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input(case: Case, tmp_path, request):
    tmp = tmp_path / "case"
    tmp.mkdir()
    if case.tmpfs_mib:
        mount_tmpfs(tmp / "small", case.tmpfs_mib, request)
    argv = [a.replace("{small}", str(tmp / "small")) for a in case.argv(tmp)]
    if "{killed}" in argv:  # built here, not in the table: listing the cases must not run a conversion
        argv = [str(killed_mid_write(tmp)) if a == "{killed}" else a for a in argv]
    roots = [tmp, TINY_MODEL]
    if "{candidate}" in argv:
        roots.append(request.getfixturevalue("candidate"))
        argv = [str(roots[-1]) if a == "{candidate}" else a for a in argv]
    env = {"PIXTRAL_QUANT_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
    before = snapshot(*roots)
    code, output = run(argv, case.proc, env)

    assert code == case.code, output
    assert "Traceback" not in output, output
    errors = ERROR_LINE.findall(output)
    assert len(errors) == 1, f"expected exactly one error line:\n{output}"
    block = output[output.index("error: "):]
    if case.code == 2 and case.first:  # bad input is reported before any other output
        assert output.startswith("error: "), output
    first, *rest = block.rstrip("\n").split("\n")
    assert case.first_line in first, f"{case.first_line!r} not in {first!r}"
    fixes = [line for line in rest if line.startswith("  fix: ")]
    assert len(fixes) == 1 and len(fixes[0]) > len("  fix: ") + 10, f"one `fix:` line wanted:\n{block}"
    assert all(line.startswith("  ") for line in rest), f"the error is not the last thing printed:\n{output}"
    assert snapshot(*roots) == before, "the command wrote or changed files"


def test_the_table_covers_every_command(tmp_path):
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    commands = set()
    for i, case in enumerate(CASES):
        (tmp_path / str(i)).mkdir()
        argv = case.argv(tmp_path / str(i))
        commands.add(" ".join(argv[:2]) if argv[0] == "calib" else argv[0])
    assert commands == {"convert", "validate", "plan", "calib inspect", "inspect", "synth", "bench"}


def test_animated_gif_is_read_as_its_first_frame_and_says_so(tmp_path):
    """Not an error by design (calibration/images.py, as mistral-common and vLLM do): Pixtral sees one picture,
    the first frame; the set's notes say so, so nothing is skipped silently."""
    path = image_manifest(tmp_path, "x.gif", animated_gif())
    result = CliRunner().invoke(main, ["calib", "inspect", str(path), "--tokenizer", "v7m1", "--json"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert notes == {"animated GIF with 3 frames: only the first frame is used": 1}
