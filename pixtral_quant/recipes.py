"""Recipes: YAML files (recipes/*.yaml at the repository root, shipped in the wheel: assets.shipped_folder)
parsed into config.Recipe.

    recipe = load_recipe("tiny-gptq-int4")          # a shipped recipe by name
    recipe = load_recipe("my/recipe.yaml")          # or any file
Unknown keys are errors (config.recipe_from_dict); defaults live in config.py only.
"""

from __future__ import annotations

from pathlib import Path

from .assets import TINY_MODEL, resolve_shipped, shipped_folder
from .config import Recipe, recipe_from_dict
from .errors import InputError, did_you_mean
from .export.manifest import MANIFEST

RECIPES_DIR = shipped_folder("recipes")
DEFAULT_RECIPE = "tiny-gptq-int4"  # what `pixtral-quant convert` with no arguments runs


def shipped_recipes() -> list[str]:
    """Names of the recipes in recipes/ (file stems)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(spec: str | Path) -> Path:
    """A recipe file from a path or a shipped name."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{spec}.yaml"
    if shipped.is_file():
        return shipped
    raise InputError("no such recipe", where=spec,
                     fix=f"{did_you_mean(spec, shipped_recipes())}pass a .yaml file or one of "
                         f"{', '.join(shipped_recipes()) or '(none found)'}")


def load_recipe(spec: str | Path) -> Recipe:
    """Parse a recipe file (or shipped name, or a converted checkpoint's folder: the recipe its manifest.json
    recorded, e.g. gptq-mixed with its allocation); InputError for bad YAML, UsageError for unknown keys."""
    import yaml

    if (Path(spec) / MANIFEST).is_file():
        return _manifest_recipe(Path(spec) / MANIFEST)
    path = recipe_path(spec)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML ({exc})", where=path, fix="fix the YAML syntax") from None
    raw = raw or {}
    if isinstance(raw, dict):
        raw.setdefault("name", path.stem)
    return recipe_from_dict(raw, where=str(path))


def _manifest_recipe(path: Path) -> Recipe:
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))["recipe"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"no recipe in this manifest ({exc})", where=path,
                         fix="pass a converted folder whose manifest.json convert wrote, or a recipe .yaml") from None
    return recipe_from_dict(raw, where=f"{path}: recipe")


def scheme_recipe(scheme, model: str | Path) -> Recipe:
    """`convert --scheme S`: the scheme's config with every other default, named after the scheme. On the bundled
    tiny model the calibration is the default recipe's (its own set, `tiny`, 96 samples): config's default set,
    `calib`, is for real Pixtrals (142k tokens, 855 s on the tiny model; issue 24), and a scheme flag must not
    change the data silently."""
    from dataclasses import replace

    recipe = Recipe(scheme=scheme, name=scheme.name)
    if resolve_shipped(model) == TINY_MODEL or Path(model).resolve() == TINY_MODEL:
        recipe = replace(recipe, calibration=load_recipe(DEFAULT_RECIPE).calibration)
    return recipe


def data_free_recipe(spec: str | Path) -> Recipe:
    """The recipe `spec` with its scheme swapped for its data-free twin of the same bits (config
    `_SchemeFacts.data_free`: gptq-int4 → rtn-int4), targets kept; a data-free scheme's recipe as it is."""
    from .config import with_overrides

    recipe = load_recipe(spec)
    twin = recipe.scheme.data_free
    return with_overrides(recipe, {"scheme": twin}) if twin else recipe
