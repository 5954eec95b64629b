"""Model cards: what ``vqkit models`` prints and docs/models.md holds, rendered from each shipped
model's ``card.json`` (written by ``benchmarks/zoo/zoo.py pack``, never by hand).

A card says what the model is for, its data and their licences, the recipe and the exact commands
that built it, the vqkit commit, the device and minutes, the held-out figures with the results file
each comes from, and its known limits.
"""

from __future__ import annotations

from typing import Any

from vqkit.runs.files import RunError
from vqkit.runs.shipped import ShippedModel, registry

CARD_FORMAT = "vqkit-model-card"
CARD_FORMAT_VERSION = 1
# Every key a card has; the packer writes all of them, so a missing one is a broken card.
CARD_KEYS = (
    "task",
    "summary",
    "data",
    "licence",
    "grid",
    "rate",
    "quality",
    "recipe",
    "rebuild",
    "commands",
    "vqkit_commit",
    "device",
    "minutes",
    "figures",
    "limits",
)
LISTING_HEADER = ("name", "task", "training data", "grid and codebook", "rate", "held-out quality", "size",
                  "licence")  # fmt: skip


def checked_card(model: ShippedModel) -> dict[str, Any]:
    """The model's card, its format and keys checked (RunError naming what is wrong)."""
    card = model.card()
    if card.get("format") != CARD_FORMAT or card.get("format_version") != CARD_FORMAT_VERSION:
        raise RunError(f"shipped model {model.name}: its card is not a {CARD_FORMAT} v{CARD_FORMAT_VERSION}")
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise RunError(f"shipped model {model.name}: its card lacks {', '.join(missing)}")
    return card


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def _model_size(model: ShippedModel, local: bool) -> str:
    """Its size on disk; for a hosted model the download size and, with ``local``, whether it is on
    this machine yet (the generated docs say the same on every machine)."""
    if not model.hosted:
        return _size(model.size_bytes)
    here = "fetched" if local and model.fetched else f"vqkit models {model.name} --fetch"
    return f"{_size(model.hosted_bytes)} hosted ({here})"


def listing_rows(models: dict[str, ShippedModel] | None = None, local: bool = True) -> list[tuple[str, ...]]:
    """One row per shipped model, LISTING_HEADER's columns (``local``: as _model_size)."""
    models = registry() if models is None else models
    rows: list[tuple[str, ...]] = []
    for name, model in sorted(models.items()):
        card = checked_card(model)
        rows.append((name, card["task"], card["data"]["train"], card["grid"], card["rate"], card["quality"],
                     _model_size(model, local), card["licence"]))  # fmt: skip
    return rows


def listing(models: dict[str, ShippedModel] | None = None) -> str:
    """The shipped models, one line each (``vqkit models``)."""
    rows = listing_rows(models)
    if not rows:
        return "no models ship with this vqkit"
    lines = []
    for row in rows:
        name, task, data, grid, rate, quality, size, licence = row
        lines.append(f"{name}: {task}. Trained on {data}; {grid}; {rate}; {quality}; {size}; {licence}")
    return "\n".join(lines)


def render_card(model: ShippedModel, heading: str = "#", local: bool = True) -> str:
    """One model's card as Markdown (``local``: as _model_size)."""
    c = checked_card(model)
    data = c["data"]
    out = [f"{heading} `{model.name}`: {c['task']}", "", c["summary"], ""]
    out += [
        "| | |",
        "|---|---|",
        f"| use | `vqkit sample {model.name}`, `vqkit compress {model.name} IMAGE -o OUT/`, ... (any command "
        "that takes a run) |",
        f"| grid and codebook | {c['grid']} |",
        f"| rate | {c['rate']} |",
        f"| held-out quality | {c['quality']} |",
        f"| size on disk | {_model_size(model, local)} ({len(model.files)} files, each checked on load "
        "against its SHA-256) |",
        *([f"| hosted at | {model.url} |"] if model.hosted else []),
        f"| weights licence | {c['licence']} |",
        f"| training data | {data['train']} (licence: {data['licence']}) |",
        f"| held-out data | {data['eval']} |",
        f"| recipe | `{c['recipe']}` |",
        f"| rebuild | `{c['rebuild']}` |",
        f"| vqkit commit | `{c['vqkit_commit']}` |",
        f"| trained on | {c['device']} |",
        "| minutes | " + ", ".join(f"{k} {v:.0f}" for k, v in c["minutes"].items()) + " |",
        f"| model fingerprint | `{model.fingerprint}` |",
        "",
    ]
    if data.get("files"):
        out += [f"Training files ({len(data['files'])}):", ""]
        out += [f"- `{f['file']}` ({f['licence']})" for f in data["files"]]
        out += [""]
    out += ["Held-out figures:", "", "| figure | value | results file |", "|---|---|---|"]
    out += [f"| {f['what']} | {f['value']} | `{f['results']}` |" for f in c["figures"]]
    out += ["", "The exact commands, in order:", "", "```bash", *c["commands"], "```", ""]
    if c["limits"]:
        out += ["Known limits:", ""]
        out += [f"- {limit}" for limit in c["limits"]]
        out += [""]
    return "\n".join(out)


def render_docs(models: dict[str, ShippedModel] | None = None) -> str:
    """docs/models.md: the listing and every card."""
    models = registry() if models is None else models
    out = [
        "# Shipped models",
        "",
        "<!-- generated by benchmarks/zoo/zoo.py docs from each model's card.json; do not edit -->",
        "",
        "These models come with vqkit: every command that takes a run folder also takes one of these "
        "names, with no training (`vqkit models` lists them, `vqkit models NAME` prints a card). Each "
        "file's SHA-256 is in the package's registry and is checked when the model loads. A shipped "
        "model is read-only: results a command would leave in a run folder go to the working "
        "directory as `NAME-<file>`, and `vqkit models NAME --copy DIR` makes a run folder of your own "
        "to extend (train a prior, fine-tune). Each is rebuilt from its recipe and data with "
        "`benchmarks/zoo/NAME.sh DATA` in a clone of the repository: it resumes where it was stopped "
        "and prints its expected hours first. A model too large for the package can be hosted "
        "instead: the registry in the package pins its files' SHA-256, and `vqkit models NAME --fetch` "
        "downloads them (from an https or file URL, or from the Hugging Face Hub when huggingface_hub "
        "is installed), keeping each only when its hash matches; nothing is downloaded otherwise.",
        "",
    ]
    rows = listing_rows(models, local=False)
    if rows:
        out += ["| " + " | ".join(LISTING_HEADER) + " |", "|" + "---|" * len(LISTING_HEADER)]
        out += ["| " + " | ".join((f"`{r[0]}`", *r[1:])) + " |" for r in rows]
        out += [""]
    else:
        out += ["No models ship yet.", ""]
    for _, model in sorted(models.items()):
        out += [render_card(model, "##", local=False)]
    return "\n".join(out).rstrip("\n") + "\n"
