"""The bottom layer: config, errors, artifacts, progress, stages, records, model loading."""
