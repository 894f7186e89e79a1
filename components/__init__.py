"""One module per pipeline stage: ingest, preprocess, train, evaluate, export."""
