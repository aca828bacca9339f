"""The documentation says what the code does (issue 30).

Every Python block in ``docs/`` and the README is a named example (``<!-- example: NAME -->``)
that ``tests/test_own_training.py`` (and the distributed tests) run as written; the README's
copies are the docs' text. Every shell command in a block, and every ``mltrack ...`` or
``python -m ...`` in the prose, is read by the parser that will read it: the ``mltrack``
command's, the experiment's own flags, ``make``'s targets, a benchmark's options. A flag
renamed in the code and not in the docs fails here. ``mkdocs build --strict`` (``make test``)
checks the rest: links, pages, the API reference's objects.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack.cli import build_parser as mltrack_parser
from mltrack.config import build_parser as experiment_parser
from mltrack.errors import UsageError
from tests.conftest import ROOT

PAGES = sorted((ROOT / "docs").rglob("*.md"))
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```", re.S)
INLINE = re.compile(r"(?<!`)`((?:\.venv/bin/)?(?:mltrack|python -m) [^`]+)`(?!`)")
# Programs the docs may show whose own flags are not mltrack's to check: the set-up of a
# store, a server, a container, a download.
EXTERNAL = {
    ".", "accelerate", "cp", "createdb", "curl", "docker", "export", "mlflow", "optuna-dashboard",
    "pip", "pre-commit", "pytest", "ruff", "mypy", "git",
}  # fmt: skip
pytestmark = pytest.mark.tf  # the docs' own experiment module imports mltrack.keras
RUN_BY_TESTS = {"keras_fit.py", "torch_fit.py", "own_loop.py", "hf_trainer.py", "my_study.py"}


def examples(path: Path) -> dict[str, str]:
    return dict(EXAMPLE.findall(path.read_text()))


def docs_examples() -> dict[str, str]:
    found: dict[str, str] = {}
    for page in PAGES:
        found.update(examples(page))
    return found


def shell_commands(text: str) -> Iterator[list[str]]:
    """Each command of each bash block: continuation lines joined, comments and ``VAR=value``
    prefixes dropped, ``;`` and ``&&`` splitting a line into commands."""
    for language, _, body in BLOCK.findall(text):
        if language not in ("bash", "sh", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            command: list[str] = []
            for token in [*lexer, ";"]:
                if token in (";", "&&", "||", "|"):
                    while command and re.match(r"^[A-Z_]+=", command[0]):
                        command.pop(0)
                    if command:
                        yield command
                    command = []
                else:
                    command.append(token)


def inline_commands(text: str) -> Iterator[list[str]]:
    """The prose's commands with a flag (`mltrack compare --group-by compile`) or a module
    (`python -m benchmarks.flops`); a command's name alone (`mltrack sweep`) or a sketch
    (`mltrack sweep ... --x`, `<RUN_ID>`) is not one."""
    for span in INLINE.findall(text):
        command = "--" in span or span.removeprefix(".venv/bin/").startswith("python -m ")
        if command and "..." not in span and "<" not in span:
            yield shlex.split(span)


def program(command: list[str]) -> str:
    return command[0].removeprefix(".venv/bin/")


def experiment_config(module: str) -> type:
    if f"{module}.py" in RUN_BY_TESTS:  # the docs' own module, as a user saves it
        loaded = types.ModuleType(module)
        # Where its dataclasses and type hints look their module up, as for an import.
        sys.modules[module] = loaded
        exec(compile(docs_examples()[f"{module}.py"], f"{module}.py", "exec"), loaded.__dict__)
    else:
        loaded = importlib.import_module(module)
    return loaded.EXPERIMENT.config


def check_experiment_flags(module: str, flags: list[str]) -> None:
    # The flags as argparse reads them (names, types, choices); no data is looked for.
    experiment_parser(experiment_config(module), module, "").parse_args(flags)


def check(command: list[str]) -> None:
    """Raise if a command names a flag, target or module the code does not have."""
    name, args = program(command), command[1:]
    if name == "mltrack":
        known, rest = mltrack_parser().parse_known_args(args)
        if known.command == "sweep":
            check_experiment_flags(known.module, rest)
        elif rest:
            raise UsageError(f"unrecognized arguments: {rest}")
    elif name in ("python", "python3") and args[:1] == ["-m"]:
        module, flags = args[1], args[2:]
        if "--help" in flags or (module.startswith("mltrack.") and module != "mltrack.cli"):
            assert importlib.util.find_spec(module), f"no module {module}"
        elif module.startswith("benchmarks."):
            source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
            missing = [f for f in flags if f.startswith("--") and f'"{f}"' not in source]
            assert not missing, f"{module} has no {missing}"
        elif module == "mltrack.cli":  # the `mltrack` command by another name
            if flags:
                check(["mltrack", *flags])
        else:
            check_experiment_flags(module, flags)
    elif name == "torchrun":
        module = args[args.index("-m") + 1]
        check_experiment_flags(module, args[args.index("-m") + 2 :])
    elif name == "make":
        targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
        flags = [a for a in args if a.startswith("ARGS=")]
        assert set(args) - set(flags) <= targets, f"make has no target in {args}"
        if flags:  # make run ARGS="...": the main experiment's flags
            check_experiment_flags("experiments.cifar_amp", shlex.split(flags[0][5:]))
    else:
        assert name in EXTERNAL, f"a command the docs test cannot check: {shlex.join(command)}"


def commands_of(path: Path) -> list[list[str]]:
    text = path.read_text()
    return [*shell_commands(text), *inline_commands(text)]


@pytest.mark.parametrize("page", [*PAGES, ROOT / "README.md"], ids=lambda p: p.name)
def test_every_command_in_the_docs_is_one_the_code_reads(page):
    problems = []
    for command in commands_of(page):
        try:
            check(command)
        except (UsageError, AssertionError, SystemExit, ValueError, ImportError) as exc:
            problems.append(f"{shlex.join(command)}\n    {type(exc).__name__}: {exc}")
    assert not problems, "\n".join(problems)


def test_every_python_block_is_an_example_the_tests_run():
    for page in [*PAGES, ROOT / "README.md"]:
        text = page.read_text()
        blocks = [m for m in BLOCK.finditer(text) if m.group(1) == "python"]
        named = set(examples(page))
        built = [m for m in blocks if 'exec="on"' in m.group(2)]  # run by mkdocs at build
        assert len(blocks) - len(built) == len(named), f"{page.name}: an unnamed python block"
        assert named <= RUN_BY_TESTS, f"{page.name}: {named - RUN_BY_TESTS} is run by no test"
    assert set(docs_examples()) == RUN_BY_TESTS


def test_the_readme_examples_are_the_docs_text():
    docs = docs_examples()
    readme = examples(ROOT / "README.md")
    assert readme, "the README shows your own training"
    for name, text in readme.items():
        assert text == docs[name], f"README's {name} differs from the docs'"


def test_the_checks_catch_a_stale_flag_target_or_program():
    for stale in (
        "mltrack compare --groupby precision",
        "python -m experiments.cifar_amp --precision fp17x --epochs two",
        "mltrack sweep experiments.cifar_amp --space-precisoin fp32",
        "make runn",
        "python -m benchmarks.startup --frameworks torch",
        "torchrun --standalone -m experiments.cifar_torch --no-such-flag",
        "wget http://example.com",
    ):
        with pytest.raises((UsageError, AssertionError, SystemExit)):
            check(shlex.split(stale))
    check(shlex.split("mltrack compare --experiment x --group-by precision"))
    [command] = shell_commands("```bash\nA=1 mltrack doctor  # end orphans\n```\n")
    assert command == ["mltrack", "doctor"]


def test_argparse_choices_are_checked_too():
    with pytest.raises((UsageError, SystemExit, argparse.ArgumentError)):
        check(shlex.split("mltrack sweep experiments.cifar_amp --sampler annealing"))
