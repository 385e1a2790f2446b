"""Apply a settings.Placement to a loaded LlavaForConditionalGeneration (what `plan` assumes at run time):

- embeddings 'cpu': the embedding table moves to CPU memory; token ids go to the CPU for the lookup and the
  looked-up rows [T, H] come back to the device (accelerate's "cpu" in a device_map would instead copy the
  whole table to the GPU at every forward);
- vision 'offload': vision tower and projector weights stay in (pinned) CPU memory and are copied to the device
  for the image pass only, then dropped there;
- lm_head 'cpu': the last hidden state goes to the CPU and the logits come back.

    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16, device_map={"": "cuda"})
    place(model, Placement(embeddings="cpu", vision="offload"), "cuda")
    torch.cuda.empty_cache()
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .settings import Placement


def _to(x, device):
    return x.to(device) if isinstance(x, torch.Tensor) else x


def run_on_cpu(module: torch.nn.Module, device) -> None:
    """Keep `module` on the CPU: inputs moved there, outputs moved back to `device`."""
    module.to("cpu")
    module.register_forward_pre_hook(lambda m, args, kwargs: (tuple(_to(a, "cpu") for a in args),
                                                              {k: _to(v, "cpu") for k, v in kwargs.items()}),
                                     with_kwargs=True)
    module.register_forward_hook(lambda m, args, out: _to(out, device))


def offload(module: torch.nn.Module, device) -> None:
    """Keep `module`'s tensors in CPU memory (pinned when CUDA is there); copy them to `device` before each
    forward and drop the device copies after it."""
    tensors = [(m, name, t) for m in module.modules()
               for name, t in [*m._parameters.items(), *m._buffers.items()] if t is not None]
    pin = torch.cuda.is_available()
    host = [t.detach().to("cpu").pin_memory() if pin else t.detach().to("cpu") for _, _, t in tensors]

    def swap(to_device: bool) -> None:
        for (m, name, _), h in zip(tensors, host, strict=True):
            value = h.to(device, non_blocking=True) if to_device else h
            if name in m._parameters:
                m._parameters[name].data = value
            else:
                m._buffers[name] = value

    swap(False)
    module.register_forward_pre_hook(lambda m, args: swap(True))
    module.register_forward_hook(lambda m, args, out: swap(False))


# (Placement field, value) → what to do with which module of the model.
PLACERS: dict[tuple[str, str], Callable[[object, object], None]] = {
    ("embeddings", "cpu"): lambda model, device: run_on_cpu(model.get_input_embeddings(), device),
    ("vision", "offload"): lambda model, device: [offload(m, device) for m in
                                                  (model.model.vision_tower, model.model.multi_modal_projector)],
    ("lm_head", "cpu"): lambda model, device: run_on_cpu(model.lm_head, device),
}


def place(model, placement: Placement, device) -> list[str]:
    """Apply every non-default placement; returns what was moved, e.g. ['embeddings: cpu']."""
    done = []
    for field in ("embeddings", "vision", "lm_head"):
        value = getattr(placement, field)
        if (field, value) in PLACERS:
            PLACERS[(field, value)](model, device)
            done.append(f"{field}: {value}")
    return done
