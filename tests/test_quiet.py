"""The CLI prints no third-party banners or warnings unless --verbose (pixtral_quant/cli/quiet.py).

Real processes: the libraries print at import time, which an in-process runner would have done long before.
The markers are the exact strings the libraries printed before quiet.py existed (GPTQModel 7.6, torch 2.x,
transformers 5, bitsandbytes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MARKERS = (
    "GPT-QModel",  # GPTQModel's import banner (LogBar, stdout)
    "Python GIL is enabled",  # GPTQModel's GIL warning
    "Auto setting",  # GPTQModel: "ENV: Auto setting PYTORCH_ALLOC_CONF=..."
    "Kernel: ",  # GPTQModel's kernel selection when transformers loads a GPTQ checkpoint
    "is an Enum subclass",  # torch.utils._pytree warning raised by torchao's import
    "No CUDA runtime is found",  # torch.utils.cpp_extension
    "gemm_4bit_forward",  # bitsandbytes' CPU backend
    "Warning:",  # Python warnings (FutureWarning: is_gradient_checkpointing ...)
    "loss_type=None",  # transformers' config warning
    "Loading weights",  # transformers' tqdm bar
    "ompressing model",  # compressed-tensors' bars when transformers loads a gptq-mixed checkpoint
    "Traceback",
)
CLI = [sys.executable, "-c", "import sys; from pixtral_quant.cli import main; sys.exit(main())"]


def run(*args: str, timeout: int = 600) -> tuple[int, str, str]:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def noise(out: str, err: str) -> list[str]:
    return [m for m in MARKERS if m in out or m in err]


def test_the_cli_imports_no_library_that_reads_its_settings_at_import():
    """quiet.py's environment switches work only for libraries imported after it sets them: tqdm reads
    TQDM_DISABLE when it is imported, so `pixtral_quant.cli` importing torch (which imports tqdm) at startup let
    compressed-tensors' bars through under a quiet validate (CI, 2026-12-07: memory/__init__ imported torch)."""
    code = "import sys; import pixtral_quant.cli; print(sorted({'torch', 'tqdm', 'transformers'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def rtn_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("quiet") / "rtn"
    rc, stdout, stderr = run("convert", "--scheme", "rtn-int4", "--out", str(out))
    assert rc == 0, stderr
    return out, stdout, stderr


def test_convert_rtn_is_quiet(rtn_out):
    out, stdout, stderr = rtn_out
    assert noise(stdout, stderr) == []
    assert not stdout.startswith("\n"), "LogBar's blank line reached stdout"
    assert "convert: done" in stdout and "convert: done" not in stderr  # the result on stdout, the log on stderr
    assert "plan (rtn-int4)" in stderr and "rtn-int4: decoder layers: 4/4 in" in stderr  # non-TTY progress lines


def test_convert_gptq_is_quiet(tmp_path):
    """GPTQModel's import banner and GIL warning are off; test_bench_quiet_then_verbose shows that --verbose brings
    the same two back (GPTQModel prints them at import, whichever command imports it: one GPTQ run fewer)."""
    rc, stdout, stderr = run("convert", "--scheme", "gptq-int4", "--num-samples", "2", "--out", str(tmp_path / "q"))
    assert rc == 0, stderr
    assert noise(stdout, stderr) == []
    assert stdout.strip().startswith("convert: done"), f"stdout should carry nothing but the result: {stdout[:300]!r}"
    assert "layer 4/4: " in stderr and " ETA " not in stdout


def test_validate_is_quiet(rtn_out, tmp_path):
    out = rtn_out[0]
    rc, stdout, stderr = run("validate", "--candidate", str(out), "--num-samples", "2", "--max-new-tokens", "4",
                             "--report-dir", str(tmp_path / "r"))
    assert rc == 0, stderr
    assert noise(stdout, stderr) == []
    assert "PASS" in stdout + stderr
    assert json.loads((tmp_path / "r" / "report.json").read_text())["passed"] is True


def test_mixed_convert_and_validate_are_quiet(tmp_path):
    """gptq-mixed: the knapsack's solver, compressed-tensors' packing on the way out and its decompression bars
    when transformers loads the checkpoint back, all quiet; --verbose shows the bars (the check can fail)."""
    out = tmp_path / "mixed"
    rc, stdout, stderr = run("convert", "--recipe", "tiny-gptq-mixed", "--num-samples", "2", "--out", str(out))
    assert rc == 0, stderr
    assert noise(stdout, stderr) == [] and stdout.strip().startswith("convert: done")
    args = ("validate", "--candidate", str(out), "--num-samples", "2", "--max-new-tokens", "2")
    rc, stdout, stderr = run(*args)
    assert rc == 0 and "PASS" in stdout + stderr, stderr  # the mix passes its recipe's thresholds (KL 6e-8)
    assert noise(stdout, stderr) == []
    rc, stdout, stderr = run(*args, "-v")  # --verbose after the subcommand, as users type it (issue 24)
    assert "ompressing model" in stdout + stderr


def test_bench_quiet_then_verbose(rtn_out):
    """bench loads the GPTQ-format checkpoint through transformers + optimum + GPTQModel: banner, kernel lines,
    the weight-loading bar and transformers' warnings, all of them off by default."""
    args = ("bench", str(rtn_out[0]), "--device", "cpu", "--dtype", "float32", "--image-size", "32x32",
            "--text-tokens", "4", "--new-tokens", "2", "--json")
    rc, stdout, stderr = run(*args)
    assert rc == 0, stderr
    assert noise(stdout, stderr) == []
    assert json.loads(stdout)["workload"]["new_tokens"] == 2
    rc, stdout, stderr = run("--verbose", *args)
    assert rc == 0, stderr
    assert {"GPT-QModel", "Python GIL is enabled", "Kernel: ", "Loading weights"} <= set(noise(stdout, stderr))


@pytest.mark.parametrize("args", [("plan", "--recipe", "pixtral-12b-int4", "--json"), ("inspect", "tiny", "--json"),
                                  ("calib", "inspect", "eval", "--num-samples", "2", "--json")],
                         ids=["plan", "inspect", "calib-inspect"])
def test_config_commands_are_quiet(args):
    rc, stdout, stderr = run(*args)
    assert rc == 0, stderr
    assert noise(stdout, stderr) == [] and stderr == ""
    json.loads(stdout)  # stdout is exactly the JSON document


def test_bad_model_is_one_line_before_any_library(tmp_path):
    """Bad input is reported before the scheme library is imported: only the error, even with --verbose."""
    for verbose in ((), ("--verbose",)):
        rc, stdout, stderr = run(*verbose, "convert", "--scheme", "gptq-int4", "--model", str(tmp_path / "nope"),
                                 "--out", str(tmp_path / "out"))
        assert rc == 2
        assert stdout == ""
        assert stderr.startswith(f"error: {tmp_path / 'nope'}: no such directory\n  fix: "), stderr
        assert noise(stdout, stderr) == []
    assert not (tmp_path / "out").exists()
