"""One module per pipeline stage: ingest, preprocess, train, evaluate, export."""

import models  # noqa: F401 - TensorFlow's CPU settings, before anything imports TensorFlow
