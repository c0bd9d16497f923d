"""The README and docs/ are a user's documents: their commands work, and they name nothing of ours.

- The README opens with two commands, and CI runs the second one exactly.
- Every ``slidewin ...`` command line in a ``bash`` block parses with the real parser; every
  inline ``slidewin SUBCOMMAND --flag`` names a real subcommand and real flags; every benchmark
  script and every relative link they name exists.
- No absolute path of a developer's machine, no commit hash, no ``../shared`` and no word about
  how the work was organised appears in them.
- The README's quick start and Python API are run as a user would (slow: they need the demo's
  exported model).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]

# A command line may end in a comment; a line carrying this one is shown but not parsed (a
# placeholder that the parser would refuse). Use it sparingly: today no line needs it.
NOT_PARSED = "# not parsed"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_two_commands_and_ci_runs_the_second_exactly():
    demo, tests = readme_commands()
    assert demo.endswith("slidewin demo")
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [tests]


# --- extracting commands ------------------------------------------------------------------------


def fenced_blocks(text: str, lang: str) -> list[str]:
    """The bodies of the ```lang fenced blocks of a markdown text, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def shell_lines(block: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comment-only and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def slidewin_argvs(line: str) -> list[list[str]]:
    """The argument lists (after ``slidewin``) of every slidewin call in one shell line.

    A call is a segment (split at ``&&``, ``||``, ``;``, ``|``) that starts with ``slidewin``,
    ``.../slidewin`` or ``python -m slidewin`` (any python); a trailing ``# comment`` is dropped.
    """
    tokens = shlex.split(line, comments=True)
    segments, current = [], []
    for token in tokens:
        if token in ("&&", "||", ";", "|"):
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    argvs = []
    for seg in segments:
        if seg and (seg[0] == "slidewin" or seg[0].endswith("/slidewin")):
            argvs.append(seg[1:])
        elif len(seg) >= 3 and Path(seg[0]).name.startswith("python") and seg[1:3] == ["-m", "slidewin"]:
            argvs.append(seg[3:])
    return argvs


def documented_command_lines() -> list[tuple[str, str]]:
    """(document, line) for every shell line that calls slidewin, in README.md and docs/*.md."""
    found = []
    for doc in DOCUMENTS:
        for block in fenced_blocks(doc.read_text(), "bash"):
            for line in shell_lines(block):
                if slidewin_argvs(line) and NOT_PARSED not in line:
                    found.append((_rel(doc), line))
    return found


def test_the_documents_show_commands():
    docs = {doc for doc, _ in documented_command_lines()}
    assert {"README.md", "docs/quality.md"} <= docs
    assert len(documented_command_lines()) >= 20


def _parser() -> argparse.ArgumentParser:
    from slidewin.cli import build_parser

    return build_parser()


def test_every_documented_command_parses():
    parser = _parser()
    failures = []
    for doc, line in documented_command_lines():
        for argv in slidewin_argvs(line):
            try:
                parser.parse_args(argv)
            except SystemExit as e:  # argparse's way to refuse (or to print --help / --version)
                if e.code not in (0, None):
                    failures.append(f"{doc}: {line}")
    assert not failures, "commands the parser refuses:\n" + "\n".join(failures)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _resolve(parser: argparse.ArgumentParser, words: list[str]) -> set[str] | None:
    """The option strings valid after ``words``: descend while the next word names a subcommand.

    A placeholder where a subcommand must be (COMMAND, SOURCE, ...) admits the options of every
    subcommand there. None when a word where a subcommand must be is neither.
    """
    known = set(parser._option_string_actions)
    for word in words:
        subs = _subparsers(parser)
        if not subs or word.startswith("-"):
            break
        if word in subs:
            parser = subs[word]
            known |= set(parser._option_string_actions)
        elif re.fullmatch(r"[A-Z][A-Z0-9_.]*|\.\.\.", word):
            for sub in subs.values():
                known |= set(sub._option_string_actions)
                for subsub in _subparsers(sub).values():
                    known |= set(subsub._option_string_actions)
            break
        else:
            return None
    return known


def inline_commands(text: str) -> list[str]:
    """Inline code spans that show a slidewin call: `slidewin detect ... --flag`."""
    return [m.group(1) for m in re.finditer(r"`((?:python -m )?slidewin [^`]+)`", text)]


def test_inline_commands_name_real_subcommands_and_flags():
    parser = _parser()
    failures = []
    for doc in DOCUMENTS:
        for span in inline_commands(doc.read_text()):
            words = span.split()[1:] if span.startswith("slidewin") else span.split()[3:]
            known = _resolve(parser, words)
            if known is None:
                failures.append(f"{_rel(doc)}: `{span}`: unknown subcommand")
                continue
            flags = [w.split("=")[0] for w in words if w.startswith("--")]
            unknown = [f for f in flags if f not in known]
            if unknown:
                failures.append(f"{_rel(doc)}: `{span}`: {', '.join(unknown)}")
    assert not failures, "inline commands that do not exist:\n" + "\n".join(failures)


def test_the_benchmark_scripts_named_exist():
    missing = [f"{_rel(doc)}: {name}" for doc in DOCUMENTS
               for name in sorted(set(re.findall(r"benchmarks/[\w/.-]+?\.py\b", doc.read_text())))
               if not (ROOT / name).is_file()]
    assert not missing, missing


def test_relative_links_point_at_files_that_exist():
    missing = []
    for doc in DOCUMENTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same page
            if not (doc.parent / target.split("#")[0]).exists():
                missing.append(f"{_rel(doc)}: {target}")
    assert not missing, missing


# --- nothing of the developers' machines or of how the work was organised ------------------------

MACHINE_PATHS = [
    re.compile(r"(?<![\w.~-])/(?:work|root|home|tmp|Users|mnt/data)/\S*"),  # absolute paths of a developer's machine
    re.compile(r"[A-Za-z]:\\Users\\"),
    re.compile(r"--before[ =]\S*\.venv/bin"),                           # a developer's environment as --before
    re.compile(r"\.\./shared\b"),                                       # the data folder beside our checkout
]
# A commit hash: 7 to 40 hex digits with at least one digit and one letter (so that words such as
# "decade" and numbers such as 1234567 are not taken for one), not part of a longer word.
COMMIT_HASH = re.compile(r"(?<![\w.-])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w-])")
WORK_HISTORY = [
    re.compile(r"\bissue[s]? #?\d+", re.I),
    re.compile(r"\bcommit [0-9a-f]{7}", re.I),
    re.compile(r"\bwhat changed\b", re.I),
    re.compile(r"\b(?:was|were) \d+(?:\.\d+)?x\b"),                     # "was 2.02x": an earlier version's figure
    re.compile(r"\bthat (?:table|stop|run) said\b", re.I),
    re.compile(r"\b(?:previous|this) session\b", re.I),
    re.compile(r"\bthat morning\b|\bthe night before\b", re.I),
]


def _offences(patterns, text: str) -> list[str]:
    return [m.group(0) for p in patterns for m in p.finditer(text)]


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_rel)
def test_no_developer_machine_paths(doc):
    assert not _offences(MACHINE_PATHS, doc.read_text())


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_rel)
def test_no_commit_hashes_and_no_history_of_the_work(doc):
    text = doc.read_text()
    assert not COMMIT_HASH.findall(text)
    assert not _offences(WORK_HISTORY, text)


def test_the_checks_catch_what_they_are_for():
    bad = ("python benchmarks/bench_startup.py --before /work/baseline/.venv/bin/slidewin\n"
           "--before .venv/bin/slidewin; data in ../shared/data/coco-dev; see /home/ana/x.png\n"
           "the tree of commit b01f936 (was 2.02x); issue 11's targets; What changed\n")
    assert len(_offences(MACHINE_PATHS, bad)) == 5
    assert COMMIT_HASH.findall(bad) == ["b01f936"]
    assert len(_offences(WORK_HISTORY, bad)) >= 4
    fine = ("EfficientNet-Lite0 at 1.90x, 1234567 boxes, a decade, ~/.cache/slidewin, "
            "s3://bucket/photos/, efficientnet-lite0.onnx, --before PATH, 640x480, 0.0916")
    assert not _offences(MACHINE_PATHS, fine) and not COMMIT_HASH.findall(fine)
    assert not _offences(WORK_HISTORY, fine)
    assert slidewin_argvs("python3 -m venv .venv && .venv/bin/slidewin demo") == [["demo"]]
    assert slidewin_argvs("python -m slidewin labels --model m.onnx  # example") == [["labels", "--model", "m.onnx"]]
    assert slidewin_argvs("ray start --head") == []


# --- run what the README shows ------------------------------------------------------------------


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory, effnet_onnx) -> Path:
    """A working directory laid out like a clone after `slidewin demo`: the model, the demo photo, coco-mini."""
    here = tmp_path_factory.mktemp("readme-user")
    (here / "models").mkdir()
    # a copy: the shared model cache may be rewritten by another test session meanwhile
    shutil.copyfile(effnet_onnx, here / "models" / "efficientnet-lite0.onnx")
    (here / "slidewin").mkdir()
    (here / "slidewin" / "data").symlink_to(ROOT / "slidewin" / "data")
    (here / "tests").mkdir()
    (here / "tests" / "data").symlink_to(ROOT / "tests" / "data")
    return here


def _run_slidewin(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "slidewin", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_quick_start_runs(user_folder):
    block = fenced_blocks(_section(README.read_text(), "Quick start"), "bash")[0]
    argvs = [argv for line in shell_lines(block) for argv in slidewin_argvs(line)]
    assert {argv[0] for argv in argvs} >= {"classify", "detect", "evaluate"}
    for argv in argvs:
        done = _run_slidewin(argv, user_folder)
        assert done.returncode == 0, f"slidewin {shlex.join(argv)}:\n{done.stdout}\n{done.stderr}"
    # what the prose under the block promises
    assert (user_folder / "scene.jpg").stat().st_size > 0
    assert '"detections"' in (user_folder / "scene.json").read_text()
    records = (user_folder / "runs" / "coco-mini" / "results.jsonl").read_text().splitlines()
    assert len(records) == len(list((ROOT / "tests" / "data" / "coco-mini" / "images").glob("*.jpg")))
    assert (user_folder / "report" / "metrics.json").is_file()


@pytest.mark.slow
def test_the_python_api_example_runs(user_folder):
    code = fenced_blocks(_section(README.read_text(), "Python API"), "python")[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=user_folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (user_folder / "annotated.jpg").stat().st_size > 0
