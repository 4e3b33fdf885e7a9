"""The ``llmkit`` command line: thin typer verbs over the library."""
