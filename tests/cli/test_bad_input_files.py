"""Every CLI command turns a bad input file (not UTF-8, or not JSON) given to any of its
file-taking flags or arguments into exactly one line on stderr and exit 2, never a
traceback. The commands are walked from the parser, so a new command or a
new file flag must be listed here before the suite passes."""

from __future__ import annotations

import argparse
import re

import pytest

from tinyserve_core.cli import build_parser, main

BAD = {
    "not-utf8": b'\xff\xfe\x00{"rate": \x81}\n',
    "not-json": b'{"rate": 1,,}\n',
}

# command -> the argv of each way it reads an input file. {file}: a bad file;
# {folder}: a folder whose every file is that bad file (a model folder, a text folder);
# {out}: a fresh output path. Commands with none read no input file of the user's.
CASES: dict[str, list[list[str]]] = {
    "generate": [["--model", "{folder}", "hello"]],
    "simulate": [["--config", "{file}"], ["--workload", "replay", "{file}"], ["--model", "{folder}"],
                 ["--text-dir", "{folder}"]],
    "info": [],
    "train-lm": [["--resume", "{file}", "--out", "{out}", "--steps", "1", "--no-eval", "--quiet"]],
    "train-scene": [["--scene", "{file}", "--out", "{out}"]],
    "workload": [["--config", "{file}", "--out", "{out}"],
                 ["--workload", "replay", "--replay-file", "{file}", "--out", "{out}"],
                 ["--text-dir", "{folder}", "--out", "{out}"], ["--model", "{folder}", "--out", "{out}"]],
    "check-trace": [["{file}"]],
    "bench engine": [["--model", "{folder}"]],
    "bench kernels": [],
    "bench decode": [],
    "bench kv": [],
    "bench gui": [["--config", "{file}"], ["--model", "{folder}"]],
    "bench scene-gui": [["--scene", "{file}"]],
    "bench scene": [["--scene", "{file}"]],
    "bench attach-gui": [],
    "bench attach": [],
    "attach": [["--from-recording", "{file}"]],
    "eval lm": [["--model", "{folder}"]],
    "eval selection": [["--model", "{folder}"]],
    "eval scene": [["--scene", "{file}"], ["--queries", "{file}"], ["--weights", "{file}"]],
    "soak": [],
    "attach": [["--from-recording", "{file}"],
               ["--tokenizer", "{folder}", "--kv-events", "tcp://127.0.0.1:9", "--duration", "0.1"]],
    "bench attach": [],
}

# Known failures, each with its reason; strict, so the marker must go
# when the fix lands (an XPASS fails the suite).
PENDING: dict[tuple[str, str, str], str] = {}
# Not run here, and why.
NOT_RUN: dict[tuple[str, str], str] = {}
# Text folders hold plain text: any UTF-8 is valid prompt text, JSON or not.
TEXT_ONLY = {("simulate", "--text-dir"), ("workload", "--text-dir")}


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    return [c for name, p in subs[0].choices.items() for c in commands(p, f"{prefix} {name}".strip())]


def test_every_command_is_listed():
    """Commands missing here (new ones) must say how they read input files."""
    assert set(commands(build_parser())) <= set(CASES)


def _cases():
    registered = set(commands(build_parser()))   # PySide6-less hosts drop the Qt benches
    for cmd, argvs in CASES.items():
        for argv in argvs:
            for kind in BAD:
                flag = next((a for a in argv if a.startswith("--")), "<arg>")
                if (cmd, flag) in TEXT_ONLY and kind != "not-utf8":
                    continue
                marks = []
                if cmd not in registered:
                    marks.append(pytest.mark.skip(reason=f"{cmd} is not registered on this host"))
                if (cmd, flag) in NOT_RUN:
                    marks.append(pytest.mark.skip(reason=NOT_RUN[(cmd, flag)]))
                if (cmd, flag, kind) in PENDING:
                    marks.append(pytest.mark.xfail(reason=PENDING[(cmd, flag, kind)], strict=True))
                yield pytest.param(cmd, argv, kind, id=f"{cmd}-{flag}-{kind}", marks=marks)


# tqdm's progress bars share stderr (an error may follow a bar on its line): cut them
_BAR = re.compile(r"[^\r\n]*?\d+%\|[^|\r\n]*\|[^\]\r\n]*\]|\x1b\[A")


@pytest.mark.parametrize("cmd, argv, kind", list(_cases()))
def test_a_bad_input_file_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, cmd, argv, kind):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    bad = tmp_path / "bad.json"          # .json: scene flags take paths by that suffix
    bad.write_bytes(BAD[kind])
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors", "a.txt"):
        (folder / name).write_bytes(BAD[kind])
    full = cmd.split() + [a.format(file=bad, folder=folder, out=tmp_path / "out") for a in argv]
    code = main(full)
    err = capsys.readouterr().err
    lines = [x for x in re.split(r"[\r\n]", _BAR.sub("", err)) if x.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert str(bad) in lines[0] or str(folder) in lines[0]
