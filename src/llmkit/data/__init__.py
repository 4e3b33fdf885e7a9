"""Text data: the embedded default corpora and user corpora (`corpora`)."""
