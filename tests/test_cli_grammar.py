"""One command-line grammar: every subcommand's parser, built as ``vqkit COMMAND`` builds it, checked
for help text on every argument and for flags that mean the same thing in every command."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator
from typing import Any

import pytest

from vqkit.cli import COMMANDS
from vqkit.config import RunConfig

# Modules of other engineers that adopt the grammar in their own branches; the lead empties this after
# merging them. A failure in a listed module is expected (xfail); a listed module that already complies
# fails the test (strict), so the entry is not forgotten.
PENDING_MODULES: set[str] = set()

WRITERS = {  # commands that write a file or folder: each names it with -o/--output
    "train", "reconstruct", "encode", "decode", "compress", "decompress", "sample", "complete",
    "denoise", "features", "codebook", "similar", "report",
}  # fmt: skip
FIGURES = {  # each takes --json PATH
    "eval", "compress", "rd", "prior eval", "prior train", "prior calibrate", "probe", "anomaly", "similar",
}  # fmt: skip
TRAINERS = {"train", "prior train"}
USES_RUN = {  # commands whose first positional argument is the run (the trained model)
    "eval", "reconstruct", "encode", "decode", "compress", "prior train", "prior eval", "prior calibrate",
    "sample", "complete", "denoise", "features", "probe", "codebook", "anomaly", "similar", "report",
}  # fmt: skip


class _Built(Exception):
    """Raised in place of parsing: the parser a command built is all the test wants."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def build_parser(name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser ``vqkit NAME`` builds, captured when the command asks it to parse (nothing runs)."""
    module, function, _ = COMMANDS[name]

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> argparse.Namespace:
        raise _Built(self)

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(_Built) as built:
            getattr(importlib.import_module(module), function)([])
    return built.value.parser


def commands(
    name: str, parser: argparse.ArgumentParser
) -> Iterator[tuple[str, argparse.ArgumentParser, str | None]]:
    """(command name, parser, its help in the parent) for a parser and its sub-commands (prior train...)."""
    yield name, parser, None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for sub, sub_parser in action.choices.items():
                for inner in commands(f"{name} {sub}", sub_parser):
                    yield inner[0], inner[1], helps.get(sub) if inner[0] == f"{name} {sub}" else inner[2]


def all_parsers(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """command name -> (module, parser), sub-commands included."""
    out: dict[str, tuple[str, argparse.ArgumentParser]] = {}
    for name, (module, _, _) in COMMANDS.items():
        for full, parser, _ in commands(name, build_parser(name, monkeypatch)):
            out[full] = (module, parser)
    return out


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


def problems(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """What in one command's parser breaks the grammar."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if not (action.help or "").strip():
            found.append(f"{name}: {'/'.join(action.option_strings) or action.dest} has no help text")
    opts = options(parser)
    if "--scale" in opts and name != "compress":
        found.append(f"{name}: --scale is compress's coding resample factor; a picture enlargement is --zoom")
    if "-o" in opts and "--output" not in opts["-o"].option_strings:
        found.append(f"{name}: -o must be spelled --output in full")
    if "--output" in opts and "-o" not in opts["--output"].option_strings:
        found.append(f"{name}: --output must have the short form -o")
    if name in WRITERS and "-o" not in opts:
        found.append(f"{name}: writes, so it takes -o/--output")
    if name in FIGURES and "--json" not in opts:
        found.append(f"{name}: computes figures, so it takes --json PATH")
    if "--device" in opts:
        device = opts["--device"]
        # the training commands default to their config's train.device (a --config or --set), else auto
        expected = None if name in TRAINERS else "auto"
        if device.default != expected or "auto" not in (device.help or ""):
            found.append(f"{name}: --device defaults to {device.default!r}, not auto")
        if "--precision" not in opts:
            found.append(f"{name}: --device comes with --precision")
    if name in USES_RUN:
        positionals = [a for a in parser._actions if not a.option_strings]
        if not positionals or positionals[0].dest != "run":
            found.append(f"{name}: the run must be the first positional argument")
    return found


def test_train_device_default_is_auto_through_its_config() -> None:
    assert RunConfig().train.device == "auto"  # prior train passes auto itself (cli/prior.py)


def test_every_command_builds_a_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    parsers = all_parsers(monkeypatch)
    assert set(COMMANDS) <= set(parsers)
    assert {"prior train", "prior eval", "prior calibrate", "prior carry"} <= set(parsers)
    for name in FIGURES | WRITERS | USES_RUN:
        assert name in parsers, name


def test_subcommands_have_help(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in COMMANDS:
        for full, _, help_text in commands(name, build_parser(name, monkeypatch)):
            if full != name:
                assert (help_text or "").strip(), f"{full} has no help in `vqkit {name} --help`"


@pytest.mark.parametrize("module", sorted({m for m, _, _ in COMMANDS.values()}))
def test_one_grammar(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    found = [
        issue
        for name, (owner, parser) in all_parsers(monkeypatch).items()
        if owner == module
        for issue in problems(name, parser)
    ]
    if module in PENDING_MODULES:
        if not found:
            pytest.fail(f"{module} now follows the grammar: remove it from PENDING_MODULES")
        pytest.xfail(f"{module} adopts the grammar in its own branch: " + "; ".join(found))
    assert not found, "\n".join(found)


def test_the_grammar_check_can_fail() -> None:
    """The checks above find what they look for (parsers that break every rule)."""
    bad = argparse.ArgumentParser()
    bad.add_argument("images")
    bad.add_argument("--scale", type=int)
    bad.add_argument("--device", default="cpu", help="device")
    found = " ".join(problems("reconstruct", bad))
    for words in ("images has no help", "--scale", "writes", "defaults to 'cpu'", "--precision",
                  "first positional"):  # fmt: skip
        assert words in found, words
    worse = argparse.ArgumentParser()
    worse.add_argument("-o", "--out", help="where")
    worse.add_argument("--output", help="where")
    found = " ".join(problems("eval", worse))
    for words in ("spelled --output", "short form -o", "--json PATH"):
        assert words in found, words
