"""`pixtral-quant calib inspect`: output on good sets, exit 2 with file:line and a fix on bad input."""

from __future__ import annotations

import json

import pytest
from calibration_helpers import huge_png, image_bytes, sample_row, write_manifest
from click.testing import CliRunner

from pixtral_quant.cli import main


def run(*args: str):
    return CliRunner().invoke(main, ["calib", "inspect", *args])


def test_inspect_builtin_eval():
    result = run("eval", "--tokenizer", "v7m1")
    assert result.exit_code == 0, result.output
    for word in ("samples", "images/sample", "longest edge px", "tokens/sample", "content hash", "multi_image"):
        assert word in result.output


def test_inspect_json_with_sampling():
    result = run("builtin:eval", "--tokenizer", "v7m1", "--num-samples", "10", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["samples"] == 10 and stats["total_tokens"] == stats["text_tokens"] + stats["image_tokens"]
    assert 0.5 < stats["image_token_share"] < 1 and stats["content_hash"].startswith("sha256:")
    assert stats == json.loads(run("eval", "--tokenizer", "v7m1", "--num-samples", "10", "--seed", "3",
                                   "--json").output)


GOOD = image_bytes("RGB", (64, 48), "JPEG")
BAD_INPUTS = {
    "corrupt JPEG": ({"x.jpg": GOOD[:2] + b"\x00" * 300 + GOOD[302:]}, [sample_row("ok", "hi"),
                                                                       sample_row("bad", {"path": "images/x.jpg"})],
                     ":2 (sample bad)", "corrupt"),
    "truncated PNG": ({"x.png": image_bytes("RGB", (64, 64), "PNG", compress_level=0)[:3000]},
                      [sample_row("bad", {"path": "images/x.png"})], ":1 (sample bad)", "truncated"),
    "PDF renamed .png": ({"x.png": b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n<<>>\nendobj\n"},
                         [sample_row("bad", {"path": "images/x.png"})], ":1 (sample bad)", "PDF document"),
    "20000x20000 image": ({"x.png": huge_png(20000, 20000)}, [sample_row("bad", {"path": "images/x.png"})],
                          ":1 (sample bad)", "decompression-bomb"),
    "empty manifest": ({}, [], "manifest.jsonl", "no samples"),
    "malformed JSON line": ({}, [sample_row("ok", "hi"), sample_row("ok2", "hi"), '{"id": "x", "messages": [}'],
                            "manifest.jsonl:3", "malformed JSON"),
    "path escaping the folder": ({}, [sample_row("bad", {"path": "../../etc/passwd"})], ":1 (sample bad)",
                                 "outside the manifest folder"),
    "missing image file": ({}, [sample_row("bad", {"path": "images/gone.png"})], ":1 (sample bad)", "does not exist"),
    "no text and no image": ({}, [{"id": "bad", "messages": [{"role": "user", "content": []},
                                                             {"role": "assistant", "content": "x"}]}],
                             ":1 (sample bad) messages[0]", "no text and no image"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_naming_line_and_fix(tmp_path, case):
    images, rows, where, message = BAD_INPUTS[case]
    path = write_manifest(tmp_path, rows, images)
    result = run(str(path), "--tokenizer", "v7m1")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    first = result.output.splitlines()[0]
    assert str(path) in first and where in first and message in first, result.output
    assert "\n  fix: " in result.output


def test_usage_errors_exit_2(tmp_path):
    assert run("eval", "--image-column", "img").exit_code == 2
    assert run("eval", "--tokenizer", str(tmp_path / "nope.json")).exit_code == 2
    assert run(str(tmp_path / "nothing-here")).exit_code == 2
    result = run("eval", "--tokenizer", "v7m1", "--num-samples", "100000")
    assert result.exit_code == 2 and "choose 1 ≤ N ≤" in result.output
