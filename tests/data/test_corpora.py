"""Tests for llmkit.data.corpora and llmkit.data.pydocs: the embedded corpora (pydocs, pysource) and user paths."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from llmkit.data import corpora
from llmkit.data import pydocs as pydocs_mod  # the renderer and its cache
from llmkit.data.corpora import (
    BUILTIN_CORPORA,
    PYDOCS_EXCLUDED,
    Corpus,
    CorpusError,
    Document,
    cache_dir,
    from_path,
    load_corpus,
    pydocs,
    pysource,
)

ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+|handle [0-9A-Fa-f]{6,}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pydocs_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache dir for the one real pydocs build of this module (never the user's home cache)."""
    return tmp_path_factory.mktemp("llmkit-cache")


@pytest.fixture(scope="module")
def docs_corpus(pydocs_cache: Path) -> Corpus:
    """One real (cold) pydocs build, shared by the tests of this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMKIT_CACHE_DIR", str(pydocs_cache))
        return pydocs()


@pytest.fixture(scope="module")
def source_corpus() -> Corpus:
    return pysource()


@pytest.fixture
def fake_render(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """Isolate the cache in tmp_path and replace the child renderer by a fast fake that records its calls."""
    monkeypatch.setenv("LLMKIT_CACHE_DIR", str(tmp_path))
    calls: list[list[str]] = []

    def render(names: list[str]) -> list[Document]:
        calls.append(names)
        return [Document("json", f"fake json doc {len(calls)}")]

    monkeypatch.setattr(pydocs_mod, "_render_pydocs", render)
    return calls


def _no_render(names: list[str]) -> list[Document]:
    raise AssertionError("the pydocs renderer ran although a valid cache exists")


# --------------------------------------------------------------------------- Corpus


def test_corpus_basics_and_head_keeps_whole_documents() -> None:
    docs = [Document("a", "x" * 10), Document("b", "é" * 10), Document("c", "z" * 10)]
    corpus = Corpus("demo", docs)
    assert len(corpus) == 3 and list(corpus) == docs
    assert corpus.texts() == ["x" * 10, "é" * 10, "z" * 10]
    assert corpus.text("|") == "x" * 10 + "|" + "é" * 10 + "|" + "z" * 10
    assert corpus.nbytes == 10 + 20 + 10  # "é" is two UTF-8 bytes

    head = corpus.head(30)
    assert head.name == "demo:head" and head.documents == docs[:2]
    assert corpus.head(29).documents == docs[:1]
    assert corpus.head(0).documents == docs[:1]  # at least one document
    assert corpus.head(10**9).documents == docs
    assert all(doc in docs for doc in corpus.head(35))  # never a cut document


# --------------------------------------------------------------------------- pydocs


def test_pydocs_contents(docs_corpus: Corpus) -> None:
    ids = [doc.id for doc in docs_corpus]
    assert docs_corpus.name == "pydocs"
    assert len(docs_corpus) > 150
    assert ids == sorted(set(ids))
    assert {"json", "collections", "os"} <= set(ids)
    assert all(doc.text.strip() for doc in docs_corpus)
    assert "JSON" in next(doc.text for doc in docs_corpus if doc.id == "json")
    assert docs_corpus.nbytes > 1_000_000


def test_pydocs_excluded_modules_are_absent(docs_corpus: Corpus) -> None:
    ids = {doc.id for doc in docs_corpus}
    assert {"this", "antigravity", "tkinter", "idlelib", "turtle", "test", "msvcrt", "winreg"} <= PYDOCS_EXCLUDED
    assert not ids & PYDOCS_EXCLUDED
    assert not any(i.startswith("_") for i in ids)
    assert ids <= set(sys.stdlib_module_names)


def test_pydocs_has_no_memory_addresses_or_caller_environment(docs_corpus: Corpus) -> None:
    text = docs_corpus.text()
    assert not ADDRESS.search(text)
    assert " at 0x..." in text  # addresses were there and got normalised
    assert "LLMKIT_CACHE_DIR" not in text  # the child gets a fixed environment, not ours


def test_pydocs_build_is_deterministic(docs_corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKIT_TEST_NOISE", "differs-between-runs")
    again = pydocs_mod._render_pydocs(pydocs_mod._pydocs_module_names())
    assert again == docs_corpus.documents


def test_pydocs_cache_is_reused(docs_corpus: Corpus, pydocs_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKIT_CACHE_DIR", str(pydocs_cache))
    monkeypatch.setattr(pydocs_mod, "_render_pydocs", _no_render)
    cached = pydocs_mod._pydocs_cache_path()
    assert cached.parent == pydocs_cache and cached.suffix == ".jsonl"
    assert load_corpus("pydocs").documents == docs_corpus.documents
    first = json.loads(cached.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"id", "text"}
    assert not list(pydocs_cache.glob("*.tmp"))  # the atomic write left no temp file


def test_pydocs_new_version_key_rebuilds(fake_render: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    first = pydocs()
    pydocs()
    assert len(fake_render) == 1  # second load came from the cache
    old_path = pydocs_mod._pydocs_cache_path()
    monkeypatch.setattr(pydocs_mod, "CORPUS_FORMAT_VERSION", pydocs_mod.CORPUS_FORMAT_VERSION + 1)
    assert pydocs_mod._pydocs_cache_path() != old_path
    second = pydocs()
    assert len(fake_render) == 2 and second.documents != first.documents
    pydocs(refresh=True)
    assert len(fake_render) == 3


@pytest.mark.parametrize("garbage", ["", "not json\n", '{"id": "json"}\n', "[1, 2]\n", '{"id": 1, "text": "x"}\n'])
def test_pydocs_corrupt_cache_is_rebuilt(fake_render: list[list[str]], garbage: str) -> None:
    path = pydocs_mod._pydocs_cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(garbage, encoding="utf-8")
    corpus = pydocs()
    assert len(fake_render) == 1 and [d.id for d in corpus] == ["json"]
    assert json.loads(path.read_text(encoding="utf-8")) == {"id": "json", "text": "fake json doc 1"}


def test_pydocs_renderer_skips_missing_modules() -> None:
    docs = pydocs_mod._render_pydocs(["json", "no_such_module_llmkit", "keyword"])
    assert [d.id for d in docs] == ["json", "keyword"]


def test_pydocs_cache_round_trips_unicode_line_separators(fake_render: list[list[str]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    odd = [Document("json", "a\u2028b\x85c\u2029d\x1ce\r\nf")]
    monkeypatch.setattr(pydocs_mod, "_render_pydocs", lambda names: fake_render.append(names) or odd)
    assert pydocs().documents == odd
    assert pydocs().documents == odd and len(fake_render) == 1  # read back from the cache


def test_renderer_skips_a_module_that_kills_or_hangs_its_child(monkeypatch: pytest.MonkeyPatch) -> None:
    sabotage = (
        "    if name == 'keyword': import os; os._exit(3)\n"
        "    if name == 'pprint': import time; time.sleep(60)\n"
    )
    script = pydocs_mod._RENDER_SCRIPT.replace("    try:\n", sabotage + "    try:\n", 1)
    assert script != pydocs_mod._RENDER_SCRIPT
    monkeypatch.setattr(pydocs_mod, "_RENDER_SCRIPT", script)
    monkeypatch.setattr(pydocs_mod, "_RENDER_TIMEOUT_S", 3.0)
    docs = pydocs_mod._render_pydocs(["json", "keyword", "pprint", "string"])
    assert [d.id for d in docs] == ["json", "string"]


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMKIT_CACHE_DIR", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("LLMKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "llmkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "llmkit"


# --------------------------------------------------------------------------- pysource


def test_pysource(source_corpus: Corpus) -> None:
    ids = [doc.id for doc in source_corpus]
    assert source_corpus.name == "pysource"
    assert len(ids) > 300 and ids == sorted(set(ids))
    assert "json/__init__.py" in ids
    assert all(i.endswith(".py") and not i.startswith("/") and "\\" not in i for i in ids)
    for i in ids:
        parts = i.split("/")
        assert not {"test", "tests", "idle_test", "site-packages", "__pycache__"} & set(parts[:-1])
        assert not parts[-1].startswith("test_")
    assert all(doc.text.strip() for doc in source_corpus)


def test_pysource_counts_non_utf8_files(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "ok.py").write_text("x = 1\n", encoding="utf-8")
    (tmp_path / "pkg" / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\ns = '\xe9'\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("y = 2\n", encoding="utf-8")
    (tmp_path / "test_x.py").write_text("z = 3\n", encoding="utf-8")
    docs, skipped = corpora._read_pysource(tmp_path)
    assert [d.id for d in docs] == ["pkg/ok.py"] and skipped == 1


# --------------------------------------------------------------------------- load_corpus


def test_load_corpus_builtins_and_concatenation(docs_corpus: Corpus, pydocs_cache: Path,
                                                source_corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKIT_CACHE_DIR", str(pydocs_cache))
    assert BUILTIN_CORPORA == ("pydocs", "pysource")
    both = load_corpus("pydocs+pysource")
    assert both.name == "pydocs+pysource"
    assert both.documents == docs_corpus.documents + source_corpus.documents


def test_builtin_name_wins_over_a_path_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_corpus: Corpus
) -> None:
    (tmp_path / "pysource").mkdir()
    (tmp_path / "pysource" / "a.txt").write_text("local", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_corpus("pysource").documents == source_corpus.documents
    assert load_corpus("./pysource").documents == [Document("a.txt", "local")]
    assert load_corpus(Path("pysource")).documents == [Document("a.txt", "local")]


def test_missing_path_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"no such corpus or path: 'nope'.*pydocs, pysource") as err:
        load_corpus("nope")
    assert "\n" not in str(err.value)
    with pytest.raises(CorpusError, match="no such corpus or path: 'nope'"):
        load_corpus("pysource+nope")


# --------------------------------------------------------------------------- user paths


def test_user_directory(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "b.md").write_text("# Title\r\nbody\n", encoding="utf-8")
    (root / "a.txt").write_bytes("\ufeffhello wörld".encode())
    (root / "sub" / "c.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "x": 1}\n', encoding="utf-8")
    (root / "sub" / "d.rst").write_text("rst", encoding="utf-8")
    (root / "sub" / "__init__.py").write_text("", encoding="utf-8")  # empty files in a dir are skipped
    (root / "skip.bin").write_bytes(b"\x00\x01")  # other extensions are ignored
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.txt").write_text("hidden", encoding="utf-8")
    corpus = load_corpus(str(root))
    assert corpus.name == str(root)
    assert [(d.id, d.text) for d in corpus] == [
        ("a.txt", "hello wörld"),
        ("b.md", "# Title\nbody\n"),
        ("sub/c.jsonl:1", "one"),
        ("sub/c.jsonl:3", "two"),
        ("sub/d.rst", "rst"),
    ]


def test_user_single_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("some notes", encoding="utf-8")
    (tmp_path / "data.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    assert from_path(tmp_path / "notes.txt").documents == [Document("notes.txt", "some notes")]
    assert [d.id for d in load_corpus(str(tmp_path / "data.jsonl"))] == ["data.jsonl:1", "data.jsonl:2"]


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"", r"corpus file '.*empty\.txt' is empty"),
        ("blank.md", b"  \n\n", r"corpus file '.*blank\.md' is empty"),
        ("bin.txt", b"abc\x00def", r"corpus file '.*bin\.txt' is binary \(NUL byte at offset 3\)"),
        ("latin.txt", b"caf\xe9 au lait", r"corpus file '.*latin\.txt' is not valid UTF-8 \(byte 0xe9 at offset 3\)"),
        ("bad.jsonl", b'{"text": "ok"}\n{oops\n', r"corpus file '.*bad\.jsonl' line 2 is not JSON"),
        ("notext.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', r"corpus file '.*notext\.jsonl' line 2 has no string \"text\""),
        ("num.jsonl", b'{"text": 3}\n', r"corpus file '.*num\.jsonl' line 1 has no string \"text\""),
        ("list.jsonl", b'["text"]\n', r"corpus file '.*list\.jsonl' line 1 has no string \"text\""),
        ("image.png", b"\x89PNG", r"corpus file '.*image\.png' has unsupported extension '\.png'"),
    ],
)
def test_bad_user_file_is_a_one_line_error(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(CorpusError, match=message) as err:
        load_corpus(str(path))
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("sub/bin.py", b"\x00", r"corpus file '.*sub/bin\.py' is binary"),
        ("sub/latin.md", b"\xff", r"corpus file '.*sub/latin\.md' is not valid UTF-8 \(byte 0xff at offset 0\)"),
        ("bad.jsonl", b"nope\n", r"corpus file '.*bad\.jsonl' line 1 is not JSON"),
    ],
)
def test_bad_file_inside_directory_names_the_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    _write(tmp_path / "ok.txt", b"fine")
    _write(tmp_path / name, content)
    with pytest.raises(CorpusError, match=message) as err:
        from_path(tmp_path)
    assert "\n" not in str(err.value)


def test_directory_without_corpus_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"corpus directory '.*empty' has no .*\.txt files"):
        load_corpus(str(tmp_path / "empty"))
    _write(tmp_path / "other" / "x.csv", b"a,b")
    with pytest.raises(CorpusError, match=r"corpus directory '.*other' has no"):
        load_corpus(str(tmp_path / "other"))
    _write(tmp_path / "blank" / "__init__.py", b"")
    with pytest.raises(CorpusError, match=r"corpus directory '.*blank' has only empty files"):
        load_corpus(str(tmp_path / "blank"))
