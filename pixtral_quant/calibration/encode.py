"""Chat messages → token ids and pixel arrays, exactly as mistral-common's `encode_chat_completion` does.

Message shape (OpenAI / Mistral content chunks)::

    {"role": "user", "content": [{"type": "image", "image": <PIL.Image>}, {"type": "text", "text": "..."}]}
    {"role": "assistant", "content": "red"}
    {"role": "system", "content": "Be brief."}

Images go in user messages only (Pixtral's chat format); assistant and system content is text, a string
or a list of text chunks (mistral-common joins several with a blank line, and so do we, by passing them on).

Why mistral-common and not transformers' PixtralProcessor (checked against transformers 5.23 and
mistral-common 1.13, see tests/test_encode.py): mistral-common is Mistral's reference implementation and reads
the real tokenizer files (tekken.json, tokenizer.model.v7m1) directly. `PixtralImageProcessor` (torchvision
backend) and `PixtralImageProcessorPil` agree with it only for images that need no resizing (sides already
multiples of 16 and at most 1024): within 2.4e-7 (torchvision) or exactly (PIL), for RGB, RGBA, LA, L and CMYK,
alpha composited over white in both. They differ otherwise: (1) resampling is a different bicubic
(mistral-common: OpenCV INTER_CUBIC on float32; transformers: torchvision / PIL bicubic), so a 37×53 image
upscaled to 48×64 differs by up to 0.53 and a 1500×700 image downscaled to 1024×480 by up to 2.0 (normalised
units) at the same size; (2) for an image
whose longer side exceeds 1024, transformers floors the scaled sides where mistral-common rounds, so a 1025×481
(W×H) image becomes 1024×480 (30 patch rows, 1950 image tokens) in transformers but 1024×496 (31 rows,
2015 tokens) in mistral-common; (3) a palette ("P") image whose palette carries alpha is composited over white
by mistral-common but has its alpha dropped by transformers. Where the image sizes agree, the token ids from
PixtralProcessor (with tekken.json converted to a Hugging Face tokenizer) equal ours. transformers 5.23 also
ships `MistralCommonBackend` (transformers.tokenization_mistral_common), whose `apply_chat_template` calls
mistral-common's `encode_chat_completion` and so gives the same ids and pixels as `encode`; it takes images as
URL / path / base64 rather than PIL objects, and with return_tensors="pt" it `np.stack`s the images, which
fails when a conversation's images differ in size — hence this module, which returns per-image arrays and pads
them itself in `collate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError

_CHUNK_FIX = "use {'type': 'text', 'text': str} or {'type': 'image', 'image': PIL.Image.Image}"
_MODE_FIX = ("a conversation that ends with an assistant turn needs a tokenizer opened with finetuning=True "
             "(loading.tokenizer.open_mistral_tokenizer); one that ends with the user needs the default mode")


@dataclass(frozen=True)
class Encoded:
    """One conversation. tokens: list[int]; images: list of float32 arrays [3, H, W], normalised, in the order
    their [IMG] blocks appear in `tokens`."""

    tokens: list[int]
    images: list[np.ndarray]


def _chunks(content, where: str, images_allowed: bool) -> list:
    """content (str or list of chunk dicts) → list of mistral-common TextChunk / ImageChunk.

    Raises InputError (where = the message) for an unknown chunk type, an image where none is allowed, and a
    message with neither non-blank text nor an image."""
    from mistral_common.protocol.instruct.messages import ImageChunk, TextChunk
    from PIL import Image

    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    elif not isinstance(content, (list, tuple)):
        raise InputError(f"content is {type(content).__name__}, not a string or a list of chunks", where=where,
                         fix=_CHUNK_FIX)
    chunks, meaningful = [], False
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InputError(f"content[{j}] is a text chunk without a string 'text'", where=where,
                                 fix=_CHUNK_FIX)
            chunks.append(TextChunk(text=text))
            meaningful = meaningful or bool(text.strip())
        elif kind == "image":
            if not images_allowed:
                raise InputError(f"content[{j}] is an image; Pixtral's chat format takes images in user messages "
                                 "only", where=where, fix="move the image into the user message before it")
            image = part.get("image")
            if not isinstance(image, Image.Image):
                raise InputError(f"content[{j}] is an image chunk whose 'image' is {type(image).__name__}, "
                                 "not a PIL image", where=where, fix="open the file with PIL.Image.open first")
            if image.width < 1 or image.height < 1:
                raise InputError(f"content[{j}] is an empty image ({image.width}×{image.height})", where=where,
                                 fix="drop the image or replace it")
            chunks.append(ImageChunk(image=image))
            meaningful = True
        else:
            shown = kind if isinstance(part, dict) else type(part).__name__
            raise InputError(f"content[{j}] is a chunk of type {shown!r}, which is not supported here",
                             where=where, fix=_CHUNK_FIX)
    if not meaningful:
        raise InputError("message has no text and no image", where=where, fix="add a text or image chunk")
    return chunks


def build_request(messages: list[dict], where: str = "messages"):
    """OpenAI-shaped dicts → mistral-common ChatCompletionRequest. Errors name the message: `{where}[i]`."""
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    by_role = {"user": UserMessage, "assistant": AssistantMessage, "system": SystemMessage}
    out = []
    for i, msg in enumerate(messages):
        here = f"{where}[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in by_role:
            shown = repr(role) if isinstance(msg, dict) else f"a {type(msg).__name__}, not a dict"
            raise InputError(f"message {i} has role {shown}", where=here, fix=f"use one of {sorted(by_role)}")
        if "content" not in msg or msg["content"] is None:
            raise InputError(f"message {i} has no content", where=here, fix="add a text or image chunk")
        chunks = _chunks(msg["content"], here, images_allowed=role == "user")
        # A plain string stays a string so mistral-common sees exactly what the caller wrote.
        content = msg["content"] if isinstance(msg["content"], str) else chunks
        out.append(by_role[role](content=content))
    return ChatCompletionRequest(messages=out)


def encode(tokenizer, messages: list[dict], where: str = "messages") -> Encoded:
    """Encode with `tokenizer` (a mistral_common MistralTokenizer). A final assistant turn needs a
    tokenizer opened in finetuning mode (see loading.tokenizer.open_mistral_tokenizer).

    Returns tokens list[int] and images list of float32 [3, H, W] (H, W multiples of 16, ≤ 1024)."""
    from mistral_common.exceptions import MistralCommonException

    request = build_request(messages, where)
    try:
        enc = tokenizer.encode_chat_completion(request)
    except MistralCommonException as exc:
        raise InputError(f"mistral-common rejected the conversation: {exc}", where=where, fix=_MODE_FIX) from None
    return Encoded(tokens=list(enc.tokens), images=[np.asarray(im, dtype=np.float32) for im in enc.images])


def collate(batch: list[Encoded], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a batch for LlavaForConditionalGeneration.

    Returns input_ids int64 [B, T] (right-padded), attention_mask int64 [B, T], and when any image is
    present pixel_values float32 [N, 3, Hmax, Wmax] (zero-padded) and image_sizes int64 [N, 2] (H, W),
    images in the order their [IMG] tokens appear (row by row), which is the order Llava scatters the
    image features into the [IMG] positions of the flattened batch.
    """
    if not batch:
        raise ValueError("collate needs at least one Encoded conversation")
    longest = max(len(e.tokens) for e in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, : len(e.tokens)] = torch.tensor(e.tokens)
        mask[row, : len(e.tokens)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    images = [im for e in batch for im in e.images]
    if images:
        out.update(pad_images(images))
    return out


def pad_images(images: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """list of [3, H, W] float32 → pixel_values [N, 3, Hmax, Wmax] and image_sizes [N, 2]."""
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    pixels = torch.zeros((len(images), 3, h, w), dtype=torch.float32)
    for i, im in enumerate(images):
        pixels[i, :, : im.shape[1], : im.shape[2]] = torch.from_numpy(im)
    sizes = torch.tensor([[im.shape[1], im.shape[2]] for im in images], dtype=torch.long)
    return {"pixel_values": pixels, "image_sizes": sizes}
