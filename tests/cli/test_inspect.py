"""`pixtral-quant inspect` through click's CliRunner: shipped configs, the tiny model, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from pixtral_quant.cli import main


def _inspect(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["inspect", *args])
    return result.exit_code, result.output


def _report(name: str) -> dict:
    code, out = _inspect(name, "--json")
    assert code == 0, out
    return json.loads(out)


def _billions(report: dict) -> dict[str, float]:
    return {k: v / 1e9 for k, v in report["params"].items()}


def test_pixtral_12b_sizes():
    report = _report("pixtral-12b")
    b = _billions(report)
    assert b["total"] == pytest.approx(12.68, abs=0.01)
    assert b["vision_tower"] == pytest.approx(0.40, abs=0.01)
    assert b["projector"] == pytest.approx(0.03, abs=0.01)
    assert b["text"] == pytest.approx(12.25, abs=0.01)
    assert report["format"] == "hf" and report["layout"] is None and report["weight_files"] == []
    assert report["dtype_source"] == "config dtype bfloat16 (no weights)"
    assert report["bytes"]["total"] == 2 * report["params"]["total"]
    assert report["text"]["head_dim"] == 128 and report["text"]["rope_theta"] == 1e9
    assert report["vision"]["hidden_act"] == "silu"


def test_pixtral_large_sizes():
    report = _report("pixtral-large")
    b = _billions(report)
    # 124.1 B to one decimal; the exact count of this config is 124.135 B (122.61 text + 1.356 vision + 0.168
    # projector, checked by hand), so the ±0.01 window is centred on 124.13.
    assert round(b["total"], 1) == 124.1 and b["total"] == pytest.approx(124.13, abs=0.01)
    assert b["vision_tower"] == pytest.approx(1.36, abs=0.01)
    assert report["projector"]["bias"] is False and report["vision"]["head_dim"] == 88


def test_native_12b_matches_hf_12b():
    native, hf = _report("pixtral-12b-native"), _report("pixtral-12b")
    assert native["format"] == "native"
    assert native["params"] == hf["params"]
    assert native["vision"] == hf["vision"]
    # params.json has no context length: everything else of the text config agrees.
    drop = {"max_position_embeddings"}
    assert {k: v for k, v in native["text"].items() if k not in drop} == \
        {k: v for k, v in hf["text"].items() if k not in drop}


def test_tiny_model_with_weights(tiny_model_dir):
    report = _report(str(tiny_model_dir))
    assert report["layout"] == "checkpoint" and report["weight_files"] == ["model.safetensors"]
    assert report["tokenizer"] == {"file": "tokenizer.model.v7m1", "kind": "mistral"}
    assert report["dtype_source"] == "safetensors headers"
    assert list(report["by_dtype"]) == ["bfloat16"]
    assert report["by_dtype"]["bfloat16"]["elements"] == report["params"]["total"]
    assert report["bytes"]["total"] == 2 * report["params"]["total"]


def test_table_output_and_help(tiny_model_dir):
    code, out = _inspect(str(tiny_model_dir))
    assert code == 0 and "decoder linears" in out and "tokenizer.model.v7m1" in out
    code, out = _inspect("--help")
    assert code == 0 and "Examples:" in out and "pixtral-quant inspect pixtral-large --json" in out


# --- bad input: exit 2, the file named, a fix, no traceback ------------------------------------------

def _copy_tiny(tiny_model_dir, out, skip=()):
    out.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name not in skip and f.is_file():
            shutil.copy(f, out / f.name)
    return out


def _empty(tiny, tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty", ["config.json", "params.json"]


def _truncated(tiny, tmp):
    d = _copy_tiny(tiny, tmp / "trunc", skip=("model.safetensors",))
    data = (tiny / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return d, ["model.safetensors", "download it again"]


def _wrong_shape(tiny, tmp):
    d = _copy_tiny(tiny, tmp / "shape")
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"]["vocab_size"] = 32000
    (d / "config.json").write_text(json.dumps(cfg))
    return d, ["model.safetensors", "language_model.lm_head.weight", "[32768, 256]", "[32000, 256]"]


def _clip(tiny, tmp):
    d = tmp / "clip"
    d.mkdir()
    cfg = json.loads((tiny / "config.json").read_text())
    cfg["vision_config"] = {"model_type": "clip_vision_model", "hidden_size": 1024}
    (d / "config.json").write_text(json.dumps(cfg))
    return d, ["config.json", "only Pixtral vision towers are supported"]


def _no_tokenizer(tiny, tmp):
    d = _copy_tiny(tiny, tmp / "notok", skip=("tokenizer.model.v7m1", "tekken.json", "tokenizer.json"))
    return d, ["notok", "no tokenizer", "tekken.json"]


@pytest.mark.parametrize("case", [_empty, _truncated, _wrong_shape, _clip, _no_tokenizer],
                         ids=["no-config", "truncated", "wrong-shape", "clip", "no-tokenizer"])
def test_bad_directory_exits_2_with_a_fix(case, tiny_model_dir, tmp_path):
    directory, expected = case(tiny_model_dir, tmp_path)
    code, out = _inspect(str(directory))
    assert code == 2, out
    assert str(directory) in out and "fix:" in out and "Traceback" not in out
    for text in expected:
        assert text in out, (text, out)


def test_hub_id_offline_exits_2(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out = _inspect("no-such-org/no-such-pixtral")
    assert code == 2 and "no-such-org/no-such-pixtral" in out and "local path" in out
    assert "Traceback" not in out
