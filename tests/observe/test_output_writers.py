"""The one writer every output goes through: symlinks written through, non-regular files
refused, nothing torn or left behind on failure, the usual permissions; and each output
of the project (trace, metrics, summary, config, replay, eval/bench JSON, GUI exports)
uses it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from synthetic_records import synthetic_run

from tinyserve_core import writers
from tinyserve_core.errors import InputFileError
from tinyserve_core.writers import AtomicWriter, check_writable, write_json, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _records():
    return synthetic_run([(0.0, 10, 8), (0.01, 10, 5)])


def _save_trace(path):
    from tinyserve_core.observe.trace import TraceWriter
    w = TraceWriter()
    w.extend(_records())
    w.save(path)


def _save_metrics(path):
    from tinyserve_core.observe.csv_export import write_metrics_csv
    write_metrics_csv(_records(), path)


def _save_config(path):
    from tinyserve_core.engine.config import EngineConfig
    EngineConfig().save(path)


def _save_replay(path):
    from tinyserve_core.engine.workloads import save_replay
    from tinyserve_core.engine.workloads.spec import WorkloadRequest
    save_replay([WorkloadRequest(arrival_s=0.0, prompt="hello", prompt_token_ids=None, prompt_len=1,
                                 max_tokens=2, n=1, salt=None, group=None)], path)


def _save_eval(path):
    from tinyserve_core.model.train.evaluate import write_eval
    write_eval({"loss": 1.0}, path)


def _save_query_log(path):
    from app.scene.exports import write_query_log
    write_query_log(path, [{"query": "mug"}])


# every writer of the project that takes a path
SAVERS = [_save_trace, _save_metrics, _save_config, _save_replay, _save_eval, _save_query_log]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("save", SAVERS, ids=lambda f: f.__name__)
def test_a_symlink_is_written_through_not_replaced(save, tmp_path):
    real = tmp_path / "real.out"
    real.write_text("old")
    link = tmp_path / "link.out"
    link.symlink_to(real.name)
    save(link)
    assert link.is_symlink() and os.readlink(link) == real.name
    assert real.read_text() != "old" and len(real.read_text()) > 0
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("save", SAVERS, ids=lambda f: f.__name__)
def test_a_fifo_or_directory_is_refused_with_its_path(save, tmp_path):
    fifo = tmp_path / "pipe.out"
    os.mkfifo(fifo)
    with pytest.raises(InputFileError) as e:
        save(fifo)
    assert "pipe.out" in str(e.value) and "regular file" in str(e.value)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    folder = tmp_path / "dir.out"
    folder.mkdir()
    with pytest.raises(InputFileError) as e:
        save(folder)
    assert "dir.out" in str(e.value) and "directory" in str(e.value)
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert _leftovers(tmp_path) == []


def test_device_nodes_are_refused():
    with pytest.raises(InputFileError, match="/dev/null.*not a regular file"):
        write_text("/dev/null", "x", "out")
    with pytest.raises(InputFileError, match="/dev/null.*not a regular file"):
        check_writable("/dev/null", "out")


@pytest.mark.parametrize("save", SAVERS, ids=lambda f: f.__name__)
def test_a_failed_replace_keeps_the_old_file_and_leaves_no_temporary(save, tmp_path, monkeypatch):
    target = tmp_path / "out.file"
    target.write_text("old")

    def no_space(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(writers.os, "replace", no_space)
    with pytest.raises(InputFileError) as e:
        save(target)
    assert "out.file" in str(e.value) and "No space left" in str(e.value)
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_an_interrupt_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with AtomicWriter(target, "out") as w:
            w.write("new, half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("save", SAVERS, ids=lambda f: f.__name__)
def test_new_files_follow_the_umask_and_replaced_ones_keep_their_mode(save, tmp_path, umask_022):
    fresh = tmp_path / "fresh.out"
    save(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644        # mkstemp would give 0600
    kept = tmp_path / "kept.out"
    kept.write_text("old")
    kept.chmod(0o640)
    save(kept)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640


def test_umask_is_read_without_changing_it(tmp_path):
    old = os.umask(0o027)
    try:
        assert writers._umask() == 0o027
        write_text(tmp_path / "a.txt", "x", "out")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


def test_check_writable_before_the_work(tmp_path):
    with pytest.raises(InputFileError, match=r"nope/s.json: summary_json: directory .*nope does not exist"):
        check_writable(tmp_path / "nope" / "s.json", "summary_json")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputFileError, match="is not a directory"):
        check_writable(tmp_path / "file" / "s.json", "out")
    with pytest.raises(InputFileError, match="is a directory"):
        check_writable(tmp_path, "out")
    # make_parents: the nearest existing folder decides, and the writer creates the rest
    assert check_writable(tmp_path / "a" / "b" / "r.json", "--json", make_parents=True) == tmp_path / "a/b/r.json"
    write_json(tmp_path / "a" / "b" / "r.json", {"x": 1}, "--json", make_parents=True)
    assert json.loads((tmp_path / "a/b/r.json").read_text()) == {"x": 1}
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(InputFileError, match="symbolic links"):
        check_writable(loop, "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_refuses_a_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputFileError, match="not writable"):
            check_writable(ro / "x.json", "out")
    finally:
        ro.chmod(0o700)


def test_gui_export_reports_a_refused_target_in_one_line(tmp_path):
    """The engine host's export goes through the same library functions."""
    from app.serving import messages as m
    from app.serving.engine_host import EngineHost

    from tinyserve_core.engine.config import EngineConfig

    sent = []
    host = EngineHost(EngineConfig(), factory=lambda cfg: None, send=sent.append)
    host._export("trace", str(tmp_path))
    (msg,) = sent
    assert isinstance(msg, m.Exported) and msg.error and str(tmp_path) in msg.error
    assert "InputFileError" not in msg.error and "directory" in msg.error
    host._export("metrics", str(tmp_path / "m.csv"))
    assert sent[-1].error is None and (tmp_path / "m.csv").read_text().startswith("step,")
