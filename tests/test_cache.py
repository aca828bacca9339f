"""``mltrack.cache``: values kept between processes, one JSON file per kind."""

from __future__ import annotations

import pytest

from mltrack import cache


def test_a_value_is_kept_under_its_key_and_files_do_not_mix(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRACK_CACHE_DIR", str(tmp_path / "cache"))
    assert cache.lookup("a.json", "k") is None
    cache.keep("a.json", "k", {"x": 1.5})
    cache.keep("a.json", "j", ["y"])
    cache.keep("b.json", "k", 2)
    assert cache.lookup("a.json", "k") == {"x": 1.5}
    assert cache.lookup("a.json", "j") == ["y"]
    assert cache.lookup("b.json", "k") == 2
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["a.json", "b.json"]


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", "\x00\xff"])
def test_an_unreadable_file_is_an_empty_cache_and_is_replaced(tmp_path, monkeypatch, content):
    monkeypatch.setenv("MLTRACK_CACHE_DIR", str(tmp_path))
    (tmp_path / "a.json").write_text(content, errors="surrogateescape")
    assert cache.lookup("a.json", "k") is None
    cache.keep("a.json", "k", 1)
    assert cache.lookup("a.json", "k") == 1


def test_a_cache_whose_folder_is_a_file_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MLTRACK_CACHE_DIR", str(tmp_path / "file"))
    cache.keep("a.json", "k", 1)  # no error
    assert cache.lookup("a.json", "k") is None
