"""The GGUF exporter behind `convert --scheme gguf-<type>` (convert.EXPORTERS["gguf"]): OUT/ gets the text model
(model.gguf), the mmproj (mmproj-model.gguf), the importance matrix (imatrix.gguf) and manifest.json, swapped in
atomically like every other output (export/atomic.py).

Order (bad input fails before anything is written): per-tensor types and file sizes from the config alone
(ktypes.py, size.py: printed as the plan) → calibration set → free disk → OUT.partial:
1. the importance matrix through the full multimodal model (calibrate.py; images in unless calibration.text_only),
   written as imatrix.gguf (llama-imatrix's format: `llama-quantize --imatrix` takes it too);
2. the text model written once in BF16 (exact for a bf16 source) by the gguf package, then quantized to the type
   by llama.cpp's own quantizer with the importance matrix (quantize.py); f16 / bf16 / q8_0 / f32 are written
   directly, as llama.cpp's converter does (`--outtype`), and take no importance matrix;
3. the mmproj in scheme.mmproj_type; 4. manifest.json (recipe, versions, calibration hash, per-tensor types,
   sha256 of every file). A GGUF conversion has no resume journal: an interrupted one starts over.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ...errors import UsageError
from .. import atomic, manifest
from ..journal import DIR as MARKER
from ..output import Output, run_output
from . import ftypes, layout

INTERMEDIATE = ".model-unquantized.gguf"  # the text model llama.cpp quantizes from (deleted after)


OUTPUT = Output("the GGUF files", "free disk space (`pixtral-quant plan` gives the file sizes) or choose another "
                "--out")  # no journal: an interrupted run has nothing to resume from, OUT.partial goes


def export_gguf(ckpt, recipe, handler, out: Path, resume: bool, reporter):
    """Write the GGUF files of `ckpt` for `recipe` (scheme config.Gguf) into OUT. Returns
    pipeline.runtime.ConvertResult."""
    from ...pipeline.runtime import ConvertResult, calibration_set
    from ...plan import render
    from . import size

    if resume:
        raise UsageError("--resume continues the layer journal of checkpoint schemes; a GGUF conversion has none",
                         where="--resume", fix=f"delete {atomic.partial_path(out)} and run without --resume")
    scheme = recipe.scheme
    if scheme.type not in ftypes.PYTHON_TYPES:
        from .quantize import check_type

        check_type(scheme.type, handler.needs_calibration)  # IQ2-class types need an importance matrix
    skeleton = size.skeleton(ckpt)  # the metadata bytes, measured once
    sizes = skeleton.sizes(scheme.type, scheme.mmproj_type, has_imatrix=handler.needs_calibration)
    plan = gguf_plan(ckpt.config, sizes, scheme)
    cset = calibration_set(recipe.calibration, ckpt) if handler.needs_calibration else None
    need = (_disk_need(skeleton, sizes, scheme), "the GGUF files and the unquantized text model they are made from")

    def write(tmp: Path):
        (tmp / MARKER).mkdir()  # atomic.commit's "not swapped yet" marker, as for a checkpoint
        result = ConvertResult(tmp, plan, calibration_hash=cset.content_hash if cset is not None else None)
        _write_all(ckpt, recipe, handler, cset, tmp, result, reporter)
        return result

    result = run_output(out, OUTPUT, write, reporter, shown=render(plan, cset), need=need)
    result.bytes_after = sum((out / name).stat().st_size for name in layout.FILES.values() if (out / name).is_file())
    return result


def _disk_need(skeleton, sizes, scheme) -> int:
    """Bytes on disk at the peak: the unquantized intermediate (when llama.cpp quantizes) next to the files."""
    from . import size

    quantized = scheme.type not in ftypes.PYTHON_TYPES
    intermediate = skeleton.sizes(size.SOURCE, scheme.mmproj_type).text_bytes if quantized else 0
    return intermediate + sizes.text_bytes + sizes.mmproj_bytes


def _write_all(ckpt, recipe, handler, cset, tmp: Path, result, reporter) -> None:
    from . import writer

    scheme = recipe.scheme
    imatrix = _imatrix(ckpt, recipe, cset, tmp, result, reporter) if handler.needs_calibration else None
    text = tmp / layout.FILES[layout.TEXT]
    advance = reporter.task(f"text model → {scheme.type}", 1)
    if scheme.type in ftypes.PYTHON_TYPES:
        writer.write_text_gguf(ckpt, text, scheme.type)
    else:
        _quantized_text(ckpt, scheme.type, imatrix, tmp, text)
    advance()
    reporter.done()
    advance = reporter.task(f"mmproj → {scheme.mmproj_type}", 1)
    writer.write_mmproj_gguf(ckpt, tmp / layout.FILES[layout.MMPROJ], scheme.mmproj_type)
    advance()
    reporter.done()
    manifest.write_manifest(tmp, _manifest_body(ckpt, recipe, result, imatrix))


def _quantized_text(ckpt, type_name: str, imatrix, tmp: Path, text: Path) -> None:
    """BF16 intermediate → llama.cpp's quantizer (with the importance matrix's payloads) → model.gguf."""
    from . import quantize, size, writer
    from .imatrix import payloads

    source = writer.write_text_gguf(ckpt, tmp / INTERMEDIATE, size.SOURCE)
    try:
        quantize.quantize_file(source, text, type_name, payloads(imatrix) if imatrix is not None else None)
    finally:
        source.unlink(missing_ok=True)


def _imatrix(ckpt, recipe, cset, tmp: Path, result, reporter):
    """The importance matrix from the calibration set through the full model, saved as imatrix.gguf."""
    from ...calibration.dataset import open_tokenizer
    from ...memory.units import GIB
    from ...pipeline.runtime import calib_budget, compute_setup
    from .calibrate import collect_imatrix
    from .imatrix import write_imatrix

    device, dtype = compute_setup()
    calib = recipe.calibration
    imatrix, result.stats = collect_imatrix(
        ckpt, cset, open_tokenizer(ckpt.tokenizer), dataset=f"{calib.set}:{cset.content_hash}",
        device=device, dtype=dtype, text_only=calib.text_only, budget_bytes=int(calib_budget(recipe) * GIB),
        scratch_parent=tmp, reporter=reporter)
    write_imatrix(imatrix, tmp / layout.FILES[layout.IMATRIX])
    return imatrix


def gguf_plan(config, sizes, scheme):
    """plan.Plan of a GGUF output: every Linear with the GGML type its weight gets (llama.cpp's rules for the text
    model, ktypes.py; the mmproj's type for the vision side), so `render` and the summary show it."""
    from ...plan import Plan, component_of, make_plan
    from ...config import Recipe
    from .names import gguf_name, name_maps

    maps = name_maps(config)
    tensors = {**sizes.text_tensors, **sizes.mmproj_tensors}
    entries = []
    for e in make_plan(config, Recipe(scheme=scheme)).entries:
        mapped = gguf_name(f"{e.name}.weight", maps)
        kind = tensors[mapped[1]][0] if mapped is not None else None
        reason = ("llama.cpp's quantizer (its per-tensor rules)" if mapped and mapped[0] == "text"
                  and scheme.type not in ftypes.PYTHON_TYPES else "written by the gguf package")
        entries.append(replace(e, component=component_of(e.name), scheme=kind, reason=reason))
    return Plan(scheme.name, tuple(entries))


def _manifest_body(ckpt, recipe, result, imatrix) -> dict:
    from importlib import metadata

    versions = manifest.versions()
    for name in ("gguf", "llama-cpp-python"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "tool": manifest.TOOL,
        "format": "gguf",
        "recipe": recipe.to_dict(),
        "source": manifest.source(ckpt),
        "versions": versions,
        "gguf": {"roles": {role: name for role, name in layout.FILES.items()
                           if role != layout.IMATRIX or imatrix is not None},
                 "type": recipe.scheme.type, "mmproj_type": recipe.scheme.mmproj_type,
                 "imatrix": None if imatrix is None else {
                     "entries": len(imatrix.entries), "chunks": imatrix.chunk_count,
                     "images": not recipe.calibration.text_only}},
        "calibration": manifest.calibration(recipe, result),
        "plan": result.plan.to_list(),
    }
