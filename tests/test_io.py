"""Atomic writes: the old file survives a failed write, permissions look like open()'s."""

from __future__ import annotations

import os
import stat

import pytest

from llmkit._io import atomic_write_bytes, refuse_overwrite


def test_new_file_gets_umask_permissions_and_existing_keeps_its_mode(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_bytes(p, b"one")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    os.chmod(p, 0o600)
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and stat.S_IMODE(p.stat().st_mode) == 0o600


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "a.txt"
    p.write_bytes(b"old")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.txt"]


def test_refuse_overwrite(tmp_path):
    (tmp_path / "x").write_text("keep")
    refuse_overwrite([tmp_path / "y"], overwrite=False)
    with pytest.raises(FileExistsError, match="already exists"):
        refuse_overwrite([tmp_path / "y", tmp_path / "x"], overwrite=False)
    refuse_overwrite([tmp_path / "x"], overwrite=True)


def test_safetensors_files_get_the_usual_mode_not_0600(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from llmkit._io import atomic_write_with

    old = os.umask(0o022)
    try:
        atomic_write_with(tmp_path / "w.safetensors", lambda tmp: save_file({"a": torch.ones(3)}, tmp))
    finally:
        os.umask(old)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    assert load_file(tmp_path / "w.safetensors")["a"].sum() == 3
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left


def test_atomic_write_with_leaves_the_old_file_when_the_writer_fails(tmp_path):
    from llmkit._io import atomic_write_with

    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["keep.bin"]


def test_jsonl_objects_keeps_line_separators_inside_strings():
    import json

    from llmkit._io import jsonl_objects

    text = json.dumps({"text": "a\u2028b\x85c"}, ensure_ascii=False) + "\n\n" + json.dumps({"n": 2}) + "\n"
    assert list(jsonl_objects(text)) == [(1, {"text": "a\u2028b\x85c"}), (3, {"n": 2})]
    with pytest.raises(ValueError, match="f.jsonl line 2: not JSON"):
        list(jsonl_objects('{"a": 1}\n{oops', "f.jsonl"))
    with pytest.raises(ValueError, match="line 1: not a JSON object"):
        list(jsonl_objects("[1]"))
