"""Fixtures of the model tests: tiny random HF checkpoints in tmp folders."""

from __future__ import annotations

import pytest

from hf_fixtures import make_hf_folder


@pytest.fixture(params=["llama3", "linear", "qwen2"])
def hf_folder(request, tmp_path):
    model = make_hf_folder(tmp_path / request.param, request.param)
    return tmp_path / request.param, model
