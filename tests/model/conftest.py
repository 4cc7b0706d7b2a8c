"""Fixtures of the model tests: tiny random HF checkpoints in tmp folders."""

from __future__ import annotations

import shutil

import pytest

from hf_fixtures import make_hf_folder


@pytest.fixture(params=["llama3", "linear", "qwen2"])
def hf_folder(request, tmp_path):
    model = make_hf_folder(tmp_path / request.param, request.param)
    return tmp_path / request.param, model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One good llama folder per test module, copied by `folder` for tests that break it."""
    path = tmp_path_factory.mktemp("good") / "llama"
    make_hf_folder(path, "linear")
    return path


@pytest.fixture
def folder(good, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(good, dst)
    return dst
