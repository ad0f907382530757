"""metrics.jsonl and TensorBoard files across resumes: rows past the checkpoint dropped, a torn last
line dropped, an unchanged file left alone, and no event file opened until something is logged."""

import json
import os

import pytest

from ssl_platform.engine.logging import RunLogger


def rows(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_resume_drops_rows_past_the_checkpoint_and_a_torn_last_line(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "lr": 0.1}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "l')
    RunLogger(tmp_path, resume_step=2).close()
    assert rows(path) == [1, 2]
    assert f"dropping the torn last line of {path}" in capsys.readouterr().err


def test_resume_at_the_last_row_leaves_the_file_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2)))
    before = os.stat(path)
    RunLogger(tmp_path, resume_step=2).close()
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_torn_line_before_the_last_is_refused_naming_it(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not JSON"):
        RunLogger(tmp_path, resume_step=3)


def test_event_file_is_opened_at_the_first_logged_row(tmp_path):
    logger = RunLogger(tmp_path)
    assert not (tmp_path / "tb").exists()
    logger.log(1, {"train/loss": 1.0})
    logger.close()
    assert rows(tmp_path / "metrics.jsonl") == [1]
    assert len(list((tmp_path / "tb").iterdir())) == 1
