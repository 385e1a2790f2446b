"""Turn what the user typed (a directory, a shipped name, a hub id) into a local directory, and tell which
format that directory holds (Hugging Face `config.json` or Mistral-native `params.json`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..assets import SHIPPED, resolve_shipped
from ..errors import InputError

# (format, marker file, weight-file glob) in order of preference when a directory holds both formats.
FORMATS: tuple[tuple[str, str, str], ...] = (
    ("hf", "config.json", "model*.safetensors"),
    ("native", "params.json", "consolidated*.safetensors"),
)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a hub snapshot needs besides weights: configs and every tokenizer form we can read.
HUB_CONFIG_FILES = ["config.json", "params.json", "generation_config.json", "tekken.json", "tokenizer.model*",
                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
                    "processor_config.json", "chat_template.json", "chat_template.jinja"]
HUB_WEIGHT_FILES = {"hf": ["model*.safetensors", "model.safetensors.index.json"],
                    "native": ["consolidated*.safetensors"]}


def resolve_path(path_or_id: str | Path, *, download_weights: bool = True) -> Path:
    """A local directory for a shipped name, an existing directory, or a hub id (downloaded with
    huggingface_hub; configs and tokenizer only when download_weights is False)."""
    shipped = resolve_shipped(path_or_id)
    if shipped is not None:
        if not shipped.is_dir():
            raise InputError(f"the shipped model {path_or_id!r} is not in this installation", where=shipped,
                             fix="reinstall pixtral-quant (the bundled tiny model is built with "
                                 "python -m pixtral_quant.fixtures.train --out " + str(shipped) + ")")
        return shipped
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InputError("this is a file, not a model directory", where=path,
                         fix="pass the directory holding config.json or params.json")
    if HUB_ID.match(str(path_or_id)):
        return _download(str(path_or_id), download_weights)
    raise InputError("no such directory", where=path,
                     fix=f"pass a model directory, a hub id (org/name) or one of {', '.join(SHIPPED)}")


def detect_format(directory: Path) -> str:
    """'hf' or 'native'. With both markers present, the format whose weight files are there wins."""
    present = [(fmt, glob) for fmt, marker, glob in FORMATS if (directory / marker).is_file()]
    if not present:
        raise InputError("neither config.json (Hugging Face) nor params.json (Mistral) is here", where=directory,
                         fix="pass the model directory itself (the one holding the config and the .safetensors)")
    with_weights = [fmt for fmt, glob in present if any(directory.glob(glob))]
    return (with_weights or [fmt for fmt, _ in present])[0]


def _hub_offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; also honour it when set later (tests, notebooks).
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _download(repo_id: str, weights: bool) -> Path:
    """Snapshot the configs and tokenizer of `repo_id`, then (weights=True) the weight files of its format."""
    directory = _snapshot(repo_id, HUB_CONFIG_FILES)
    if weights:
        directory = _snapshot(repo_id, HUB_CONFIG_FILES + HUB_WEIGHT_FILES[detect_format(directory)])
    return directory


def _snapshot(repo_id: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = _hub_offline()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        state = "the Hugging Face hub is offline here (HF_HUB_OFFLINE)" if offline else \
            f"it could not be fetched from the Hugging Face hub ({type(exc).__name__})"
        raise InputError(f"{repo_id!r} is not a local directory and {state}", where=repo_id,
                         fix="download the model elsewhere (huggingface-cli download ...) and pass its local "
                             "path, or connect to the hub") from None
