"""The tool-use training data: rag_search conversations hold what the real tool shows, and
passages are cut to what a small model can read."""

from __future__ import annotations

import pytest

from llmkit.agents.data import RAG_SEARCH, SNIPPET_CHARS, rag_search_conversations, rag_search_tasks, tool_use_dataset
from llmkit.agents.tools import format_passage, passage_snippet
from llmkit.chat import normalize_messages
from llmkit.data.corpora import load_corpus

DOC = """FUNCTIONS
    heapify(heap, /)
        Transform list into a heap, in-place, in O(len(heap)) time.

    heappush(heap, item, /)
        Push item onto heap, maintaining the heap invariant.
"""


def test_snippet_starts_at_the_definition_of_the_queried_name():
    offset, text = passage_snippet(DOC, "heapq.heappush", 200)
    assert offset == 4 and text == "heappush(heap, item, /)\nPush item onto heap, maintaining the heap invariant."
    # the module part of a dotted name is not a function name; without a definition, the line with most query words
    assert passage_snippet("x\nthe heap invariant holds\ny", "heap invariant", 100) == (1, "the heap invariant holds\ny")
    assert passage_snippet("a\nb", "zzz", 100) == (0, "a\nb")
    # names: a dotted name's last part, a call, backticks, underscores, a one-word query; prose names nothing
    text = "intro\nparse(x)\nhow to parse arguments from the command line\njoin(a, b)"
    assert passage_snippet(text, "How do I parse arguments?", 100)[0] == 2
    assert passage_snippet(text, "parse", 100)[0] == passage_snippet(text, "what does `parse` do", 100)[0] == 1
    assert passage_snippet(text, "os.path.join", 100)[0] == passage_snippet(text, "call join() here", 100)[0] == 3


def test_snippet_cuts_at_a_word_end_and_marks_the_cut():
    offset, text = passage_snippet(DOC, "heapify", 40)
    assert offset == 1 and len(text) <= 40 and text.endswith("...") and text.startswith("heapify(heap, /)\nTransform")
    assert not text[:-3].endswith(("Transfor", "int")) and "in-place" not in text
    with pytest.raises(ValueError, match="max_chars"):
        passage_snippet(DOC, "x", 10)


def test_format_passage_shows_short_text_whole_and_long_text_as_a_snippet():
    assert format_passage(2, "tea", 3, 3, "  Green tea.  ", "tea", 100) == "[2] tea (lines 3-3):\nGreen tea."
    assert format_passage(1, "heapq", 40, 46, DOC, "heappush", 60).startswith("[1] heapq (line 44):\nheappush(heap, item, /)\n")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("pydocs")


def test_rag_conversations_quote_the_passage_and_hold_out_functions(corpus):
    train = rag_search_conversations(300, seed=1, corpus=corpus)
    test = rag_search_conversations(100, seed=1, held_out=True, corpus=corpus)
    assert rag_search_conversations(300, seed=1, corpus=corpus) == train != rag_search_conversations(300, seed=2, corpus=corpus)
    names = set()
    for conv in train + test:
        assert normalize_messages(conv) == conv
        user, call, tool, answer = conv
        (tc,) = call["tool_calls"]
        assert tc["name"] == RAG_SEARCH and f"`{tc['arguments']['query']}`" in user["content"]
        query = tc["arguments"]["query"]
        assert tool["content"].startswith(f"[1] {query.split('.')[0] if '.' in query else 'builtins'} (line")
        assert len(tool["content"].split("\n", 1)[1]) <= SNIPPET_CHARS
        assert answer["content"] in " ".join(tool["content"].split())
        names.add(tc["arguments"]["query"])
    assert len(names) == 400  # distinct functions, none both trained and held out
    tasks = rag_search_tasks(20, corpus=corpus)
    assert all(t["module"] == (t["query"].split(".")[0] if "." in t["query"] else "builtins") for t in tasks)
    assert {t["query"] for t in tasks} <= {c[1]["tool_calls"][0]["arguments"]["query"] for c in rag_search_conversations(200, 0, held_out=True, corpus=corpus)}
    with pytest.raises(ValueError, match="only"):
        rag_search_conversations(100_000, corpus=corpus)


def test_training_passages_are_what_the_real_tool_returns(corpus, tmp_path):
    """An index over three pydocs modules; the real rag_search (one passage, the snippet
    length of the data) shows for most functions the passage the data was made with (cut
    where the index's chunk ends), answer included."""
    from llmkit.agents.tools import make_rag_search
    from llmkit.rag.index import build_index
    from llmkit.rag.ingest import corpus_documents

    modules = {"heapq", "bisect", "textwrap"}
    build_index(out=tmp_path / "index", documents=[d for d in corpus_documents("pydocs") if d.id in modules])
    search = make_rag_search(tmp_path / "index", k_default=1, max_chars=SNIPPET_CHARS)
    sub = [d for d in corpus if d.id in modules]
    pool = [c for held in (False, True) for c in rag_search_conversations(len(_all(sub, held)), corpus=sub, held_out=held)]
    assert len(pool) >= 8 and len({c[2]["content"].split(" ")[1] for c in pool} & modules) >= 2
    same = []
    for c in pool:
        got, want = search(c[1]["tool_calls"][0]["arguments"]["query"]).removesuffix("..."), c[2]["content"].removesuffix("...")
        # equal, or equal up to where the index's chunk ends (the data's passage runs on)
        same.append((got.startswith(want) or want.startswith(got)) and c[3]["content"] in " ".join(got.split()))
    assert sum(same) >= 0.8 * len(same), same


def _all(corpus, held):
    from llmkit.agents.data import _held_out, _searchable

    return [f for f, _ in _searchable(corpus) if _held_out(f) == held]


def test_a_defining_passage_of_the_named_module_ranks_first(tmp_path):
    from llmkit.agents.tools import make_rag_search
    from llmkit.rag.index import build_index
    from llmkit.rag.ingest import Document

    docs = [Document("alpha", "Alpha", "join(a, b)\n    Join two strings, the alpha way: with a comma between them."),
            Document("beta", "Beta", "join(parts)\n    Join the parts of a beta path into one path."),
            Document("gamma", "Gamma", "Paths are joined by the join function; joining paths is what gamma is about, join join join.")]
    build_index(out=tmp_path / "index", documents=docs)
    search = make_rag_search(tmp_path / "index", k_default=1)
    assert search("beta.join").startswith("[1] beta ") and search("alpha.join").startswith("[1] alpha ")
    assert search("how are paths joined in gamma", k=3).startswith("[1] gamma ")  # prose: the retriever's order


def test_tool_use_dataset_mixes_all_three(corpus):
    convs = tool_use_dataset(n_arith=30, n_large=20, n_rag=10, seed=3, corpus=corpus)
    twice = tool_use_dataset(n_arith=0, n_large=0, n_rag=2000, corpus=corpus)  # more than the functions: a second pass
    assert len(twice) == 2000 and len({c[0]["content"] for c in twice}) > 1000
    with pytest.raises(ValueError, match="no documented function"):
        tool_use_dataset(n_arith=1, n_large=0, n_rag=5, corpus=[])
    with pytest.raises(ValueError, match=">= 0"):
        tool_use_dataset(n_arith=1, n_large=0, n_rag=-1, corpus=corpus)
    assert len(convs) == 60 and convs == tool_use_dataset(n_arith=30, n_large=20, n_rag=10, seed=3, corpus=corpus)
    tools = [m["tool_calls"][0]["name"] for c in convs for m in c if m.get("tool_calls")]
    assert tools.count("calculator") == 50 and tools.count(RAG_SEARCH) == 10
