"""Serving: an OpenAI-compatible HTTP server (:mod:`llmkit.serve.app`) over a batching engine
(:mod:`llmkit.serve.engine`)."""
