"""`tinyserve generate` never drops a prompt silently: each prompt
prints its output or one line saying why it was rejected, and any rejection makes the
exit status 2."""

from __future__ import annotations

from tinyserve_core.cli import main
from tinyserve_core.engine.llm import LLM
from tinyserve_core.engine.sampling import SamplingParams

LONG = "the list type " * 300   # far over the tiny model's 512-token context


def _gen(tiny_model_dir, *prompts):
    return main(["generate", "--model", str(tiny_model_dir), "--device", "cpu", "--max-tokens", "3", *prompts])


def test_an_empty_and_a_too_long_prompt_are_named_and_the_others_still_print(tiny_model_dir, capsys):
    code = _gen(tiny_model_dir, "The list type", "", LONG, "A dictionary")
    out, err = capsys.readouterr()
    assert code == 2
    assert out.startswith("The list type") and "A dictionary" in out and LONG.strip() not in out
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("tinyserve generate: prompt 2 rejected: empty prompt")
    assert lines[1].startswith("tinyserve generate: prompt 3 rejected: prompt too long:")
    assert "context of 512 tokens" in lines[1]


def test_all_prompts_running_exits_zero(tiny_model_dir, capsys):
    assert _gen(tiny_model_dir, "The list type") == 0
    assert capsys.readouterr().err == ""


def test_help_documents_the_exit_status(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "exit status 2 when any prompt was rejected" in capsys.readouterr().out.replace("\n", " ").lower()


def test_llm_reports_the_reason_of_a_rejected_prompt(tiny_model_dir):
    llm = LLM(model=str(tiny_model_dir), device="cpu")
    outs = llm.generate(["", "The list type"], SamplingParams(max_tokens=2))
    assert outs[0].rejected == "empty prompt" and outs[0].outputs == []
    assert outs[1].rejected is None and len(outs[1].outputs) == 1
