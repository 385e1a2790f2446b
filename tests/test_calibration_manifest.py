"""JSONL manifests: accepted shapes, and every rejected one names file:line and a fix."""

from __future__ import annotations

import base64
import json

import pytest
from calibration_helpers import image_bytes, sample_row, turn, write_manifest

from pixtral_quant.calibration.fetch import read_bytes
from pixtral_quant.calibration.refs import ImageRef, classify
from pixtral_quant.calibration.manifest import read_manifest
from pixtral_quant.errors import InputError

PNG = image_bytes("RGB", (20, 12))
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_reads_interleaved_multi_turn_sample(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}]
    messages += turn("First:", {"path": "images/a.png"}, "second:", {"url": "images/a.png"}, {"url": DATA_URL},
                     "compare.", answer="Same.")
    messages += turn({"path": "images/a.png"}, answer="Again the same.")
    path = write_manifest(tmp_path, [{"id": "s1", "task": "multi", "answer": 3, "messages": messages}], {"a.png": PNG})
    [sample] = read_manifest(path)
    assert (sample.id, sample.task, sample.answer) == ("s1", "multi", "3")
    refs = sample.image_refs()
    assert [r.kind for r in refs] == ["path", "path", "data", "path"]
    assert all(read_bytes(r, sample.where) == PNG for r in refs)
    assert [role for role, _ in sample.text_parts()] == ["system", "user", "user", "user", "assistant", "assistant"]
    assert sample.where == f"{path}:1 (sample s1)"


def test_image_url_string_form_and_default_id(tmp_path):
    answer = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    row = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "images/a.png"}]},
                        {"role": "assistant", "content": answer}]}
    path = write_manifest(tmp_path, ["", row], {"a.png": PNG})
    [sample] = read_manifest(path)
    assert sample.id == "manifest-2" and sample.messages[1]["content"] == "ab"


def test_classify():
    assert classify("data:image/png;base64,xx") == "data"
    assert classify("HTTPS://x.org/a.png") == "http"
    assert classify("file://images/a.png") == "path"
    assert classify("images/a.png") == "path"


def _error(tmp_path, rows, images=None) -> InputError:
    path = write_manifest(tmp_path, rows, images)
    with pytest.raises(InputError) as info:
        read_manifest(path)
    assert info.value.fix, "every error says how to fix it"
    return info.value


def test_empty_manifest(tmp_path):
    err = _error(tmp_path, ["", "  "])
    assert "no samples" in err.message and err.where.endswith("manifest.jsonl")


def test_malformed_json_names_the_line(tmp_path):
    err = _error(tmp_path, [sample_row("a", "hi"), '{"messages": [', sample_row("c", "hi")])
    assert err.where.endswith("manifest.jsonl:2") and "malformed JSON" in err.message


def test_path_escaping_the_folder(tmp_path):
    (tmp_path / "secret.png").write_bytes(PNG)
    err = _error(tmp_path / "set", [sample_row("a", {"path": "../secret.png"})])
    assert "outside the manifest folder" in err.message and ":1 (sample a)" in err.where


def test_absolute_path_and_symlink_escape(tmp_path):
    (tmp_path / "secret.png").write_bytes(PNG)
    assert "outside" in _error(tmp_path / "s1", [sample_row("a", {"path": str(tmp_path / "secret.png")})]).message
    folder = tmp_path / "s2"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    assert "outside" in _error(folder, [sample_row("a", {"path": "images/link.png"})]).message


def test_missing_image_file(tmp_path):
    err = _error(tmp_path, [sample_row("a", "x"), sample_row("b", {"path": "images/nope.png"})])
    assert "does not exist" in err.message and ":2 (sample b)" in err.where


def test_message_with_no_text_and_no_image(tmp_path):
    row = {"id": "e", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]},
                                   {"role": "assistant", "content": "x"}]}
    err = _error(tmp_path, [row])
    assert "no text and no image" in err.message and "messages[0]" in err.where


@pytest.mark.parametrize("messages,expected", [
    ([{"role": "user", "content": "hi"}], "does not end with an assistant"),
    ([{"role": "assistant", "content": "hi"}], "out of order"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
     "out of order"),
    ([{"role": "robot", "content": "a"}], "role"),
    ([{"role": "user", "content": [{"type": "video", "url": "x"}]}, {"role": "assistant", "content": "c"}],
     "unknown content chunk"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "image", "path": "images/a.png"}]}],
     "user messages only"),
    ([], "non-empty"),
])
def test_bad_conversations(tmp_path, messages, expected):
    assert expected in _error(tmp_path, [{"id": "c", "messages": messages}], {"a.png": PNG}).message


def test_unknown_key_and_duplicate_id(tmp_path):
    assert "unknown key" in _error(tmp_path, [{"mesages": []}]).message
    err = _error(tmp_path, [sample_row("a", "x"), sample_row("a", "y")])
    assert "also used on line 1" in err.message and ":2" in err.where


def test_bad_data_url_payload():
    with pytest.raises(InputError, match="base64"):
        read_bytes(ImageRef("data", "data:image/png;base64,@@@"), "m:1")
    with pytest.raises(InputError, match="data:image"):
        read_bytes(ImageRef("data", "data:text/plain,hello"), "m:1")


def test_http_offline_names_the_sample(tmp_path):
    row = sample_row("web", {"url": "http://127.0.0.1:9/photo.jpg"})  # port 9: nothing listens
    [sample] = read_manifest(write_manifest(tmp_path, [row]))
    with pytest.raises(InputError) as info:
        read_bytes(sample.image_refs()[0], sample.where)
    assert "cannot fetch" in info.value.message and "(sample web)" in info.value.where
    assert "download the image" in info.value.fix


def test_not_utf8(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(InputError, match="UTF-8"):
        read_manifest(path)


def test_manifest_lines_are_json_objects(tmp_path):
    err = _error(tmp_path, [json.dumps([1, 2])])
    assert "JSON object" in err.message
