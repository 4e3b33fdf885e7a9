"""Retrieval-augmented generation: index documents (:mod:`llmkit.rag.index`), retrieve by
dense, keyword or hybrid search (:mod:`llmkit.rag.retrieve`), answer with citations
(:mod:`llmkit.rag.answer`), and measure retrieval (:mod:`llmkit.rag.eval`).

    from llmkit.rag.index import build_index
    from llmkit.rag.retrieve import Retriever
    from llmkit.rag.answer import answer
    build_index(out="runs/index")                      # the pydocs corpus
    print(answer("How do I parse a URL?", Retriever("runs/index")).format())
"""
