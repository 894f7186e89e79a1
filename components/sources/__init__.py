"""Dataset sources that ingest reads: folder layouts and built-in datasets."""
