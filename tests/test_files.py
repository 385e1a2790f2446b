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


def test_streams_from_a_file_larger_than_ram(tmp_path):
    """Pixtral-12B's native consolidated.safetensors (25.4 GB) is larger than a 24 GiB machine's RAM: opening it must
    not map it copy-on-write (ENOMEM under the kernel's overcommit heuristic). A sparse file RAM + 8 GiB long,
    holding a small tensor and a huge zero one, costs no disk."""
    import json
    import os
    import struct

    huge = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") + 8 * 2**30
    header = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                         "big": {"dtype": "BF16", "shape": [huge // 2], "data_offsets": [16, 16 + huge]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "consolidated.safetensors"
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header + torch.arange(4, dtype=torch.float32).numpy().tobytes())
        fh.truncate(8 + len(header) + 16 + huge)
    (name, tensor), = stream_tensors(path, ["a"])
    assert name == "a" and tensor.tolist() == [0.0, 1.0, 2.0, 3.0]
