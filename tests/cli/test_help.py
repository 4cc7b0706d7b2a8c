"""`tinyserve --help` lists every command with a line; every flag says what it does and
its default."""

from __future__ import annotations

import argparse

from tinyserve_core.cli import build_parser


def _walk(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def _commands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action, list(action.choices)


def test_top_level_help_lists_every_command_with_a_line():
    parser = build_parser()
    action, names = _commands(parser)
    assert names == ["generate", "simulate", "attach", "info", "train-lm", "train-scene", "workload", "check-trace",
                     "bench", "eval", "soak"]
    helps = {c.dest: c.help for c in action._choices_actions}
    text = parser.format_help()
    for name in names:
        assert helps[name] and name in text and helps[name].split()[0] in text


def test_every_option_of_every_command_has_help_with_its_default():
    parser = build_parser()
    missing, no_default = [], []
    seen = 0
    for path, p in _walk(parser):
        p.format_help()  # a help string argparse cannot format ("%" without a key) raises here
        formatter = p._get_formatter()
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            seen += 1
            name = " ".join(path) + " " + (a.option_strings[0] if a.option_strings else a.dest)
            if not a.help or a.help == argparse.SUPPRESS:
                missing.append(name)
            elif a.option_strings and "default" not in formatter._get_help_string(a) % {"default": a.default}:
                no_default.append(name)
    assert seen > 150  # the walk reached the subcommands' flags
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help hides the default: {no_default}"


def test_every_subcommand_has_a_one_line_help():
    parser = build_parser()
    for path, p in _walk(parser):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for c in a._choices_actions:
                    assert c.help and "\n" not in c.help, (path, c.dest)
