"""Configuration: defaults in code, JSON file, key=value overrides; unknown keys and bad types raise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vqkit.config import RECIPES as SHIPPED
from vqkit.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    from_dict,
    load_config,
    recipe_path,
    shipped_recipes,
    to_dict,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = RunConfig()
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"model": {"quantizer": {"codebook_size": 256}}, "train": {"lr": 1}}))
    cfg = load_config(f, ["train.batch_size=64", "model.quantizer.lookup_dim=8", "data.spec=/x y"])
    assert cfg.model.quantizer.codebook_size == 256 and cfg.train.lr == 1.0
    assert cfg.train.batch_size == 64 and cfg.model.quantizer.lookup_dim == 8
    assert cfg.data.spec == "/x y" and cfg.model.channels == RunConfig().model.channels
    assert apply_overrides(cfg, ["model.quantizer.lookup_dim=null"]).model.quantizer.lookup_dim is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "unknown config key"),
        ("nosuch.x=1", "unknown config section"),
        ("train.batch_size=1.5", "expected int"),
        ("model.quantizer.ema=yes", "expected bool"),
        ("model.downsample=3", "must be 2, 4 or 8"),
        ("model.outer_blocks=-1", "outer_blocks must be >= 0"),
        ("train.batch_size", "key=value"),
    ],
)
def test_bad_overrides_raise(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_outer_blocks_need_a_resolution_between_image_and_latents() -> None:
    assert load_config(None, ["model.outer_blocks=2", "model.downsample=8"]).model.outer_blocks == 2
    with pytest.raises(ConfigError, match=r"outer_blocks needs model\.downsample 4 or 8"):
        load_config(None, ["model.outer_blocks=1", "model.downsample=2"])


def test_unknown_key_in_file_raises(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"model": {"quantiser": {}}}))
    with pytest.raises(ConfigError, match=r"model\.quantiser"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.json")


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.json")), ids=lambda p: p.name)
def test_recipes_load(recipe: Path) -> None:
    load_config(recipe)


def test_a_recipe_is_found_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs' `--config recipes/cifar10.json` and a bare `cifar10` name the recipe that ships inside
    the package (an installed vqkit has no clone's recipes/ folder); a file that exists wins."""
    assert {p.stem for p in RECIPES.glob("*.json")} == set(shipped_recipes())
    monkeypatch.chdir(tmp_path)  # no recipes/ here
    for given in ("cifar10", "cifar10.json", "recipes/cifar10.json"):
        assert recipe_path(given) == SHIPPED / "cifar10.json"
        assert load_config(given) == load_config(RECIPES / "cifar10.json")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "cifar10.json").write_text(json.dumps({"train": {"lr": 0.5}}))
    assert load_config("recipes/cifar10.json").train.lr == 0.5  # the user's own file
    with pytest.raises(ConfigError, match=r"not found: cifar11.*shipped recipes: .*cifar10, "):
        load_config("cifar11")
    with pytest.raises(ConfigError, match="not found"):
        recipe_path("elsewhere/cifar10.json")  # a folder of the user's: never swapped for a recipe
