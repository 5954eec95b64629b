"""vqkit models: the models that ship with vqkit (list, card, hash check, copy into a run folder)."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

from vqkit.cli.common import parser
from vqkit.runs import RunError, registry, shipped
from vqkit.zoo import cards


def main(argv: list[str]) -> int:
    p = parser(
        "models",
        "The models that ship with vqkit. Every command that takes a run folder also takes their names "
        "(vqkit sample cifar10, vqkit compress photo IMAGE -o OUT/); no training needed.",
    )
    p.add_argument("name", nargs="?", help="one model: print its card (what it is, how it was made, figures)")
    p.add_argument("--json", action="store_true", help="print the models' cards, sizes and hashes as JSON")
    p.add_argument("--verify", action="store_true", help="check every file's SHA-256 against the registry")
    p.add_argument("--fetch", action="store_true",
                   help="download hosted models' files (NAME, or every hosted model), each kept only when "
                   "its SHA-256 matches the registry (models in the package need no fetching)")  # fmt: skip
    p.add_argument("--copy", type=Path, metavar="DIR",
                   help="with NAME: copy the model into a new run folder DIR of your own (shipped models "
                   "are read-only; a copy can take a new prior, a fine-tune or results)")  # fmt: skip
    a = p.parse_args(argv)
    models = shipped.registry()
    if a.name is not None:
        models = {a.name: shipped.get(a.name)}
    elif a.copy is not None:
        p.error("--copy needs the NAME of the model to copy")
    if a.fetch:
        hosted = sorted(n for n, m in models.items() if m.hosted)
        if a.name is not None and not hosted:
            p.error(f"{a.name} ships inside vqkit; there is nothing to fetch")
        for name in hosted:
            model = shipped.fetch(name, progress=partial(_fetching, name))
            print(f"{name}: {len(model.files)} files in {model.path}, each matching the registry")
        if not hosted:
            print("no hosted models: every model ships inside vqkit")
    if a.verify:
        for name in sorted(models):
            model = shipped.verify(name)
            print(f"{name}: {len(model.files)} files match the registry")
    if a.copy is not None:
        assert a.name is not None
        return _copy(shipped.verify(a.name), a.copy)
    if a.json:
        doc = [
            {"name": name, "path": str(m.path), "size_bytes": m.size_bytes, "fingerprint": m.fingerprint,
             "files": m.files, "card": cards.checked_card(m)}
            for name, m in sorted(models.items())
        ]  # fmt: skip
        print(json.dumps(doc, indent=2))
    elif a.name is not None:
        print(cards.render_card(models[a.name]))
    elif not (a.verify or a.fetch):
        print(cards.listing(models))
    return 0


def _fetching(name: str, file: str) -> None:
    print(f"{name}: fetching {file}", flush=True)


def _copy(model: shipped.ShippedModel, target: Path) -> int:
    if target.exists():
        raise RunError(f"{target} exists; --copy makes a new run folder")
    target.mkdir(parents=True)
    for file in sorted(model.files):
        shutil.copyfile(model.path / file, target / file)
    registry.register(target)  # files coded with it now also find the copy
    print(f"copied {model.name} into {target} ({len(model.files)} files); it is an ordinary run folder")
    return 0
