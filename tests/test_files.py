"""Safetensors header validation and streaming (loading/files.py) on small synthetic files."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pixtral_quant.errors import InputError
from pixtral_quant.loading.files import read_header, stream_tensors


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6, dtype=torch.bfloat16).view(2, 3), "b": torch.ones(4)}, str(path))
    return path


def test_header_gives_dtype_shape_and_bytes(small):
    infos = read_header(small)
    assert (infos["a"].dtype, infos["a"].shape, infos["a"].nbytes, infos["a"].numel) == ("bfloat16", (2, 3), 12, 6)
    assert (infos["b"].dtype, infos["b"].nbytes) == ("float32", 16)


@pytest.mark.parametrize("keep,says", [(4, "only 4 bytes"), (40, "claims"), (-4, "truncated")])
def test_cut_files_are_rejected_before_reading_data(small, keep, says):
    data = small.read_bytes()
    small.write_bytes(data[:keep])
    with pytest.raises(InputError, match=says) as err:
        read_header(small)
    assert err.value.where == str(small) and "download it again" in err.value.fix


def test_streaming_turns_safetensors_errors_into_input_errors(small):
    assert [n for n, _ in stream_tensors(small, ["a", "b"])] == ["a", "b"]
    small.write_bytes(small.read_bytes() + b"\0" * 8)  # header still fits; safetensors refuses the file
    with pytest.raises(InputError, match="not a readable safetensors file") as err:
        list(stream_tensors(small, ["a"]))
    assert err.value.where == str(small)
