"""Benchmarks: how fast the pipeline runs (``make bench``) and the MNIST table (``make benchmark``).

stages          ingest and preprocess images/s and peak memory; training peak memory
model           training and scoring speed of the model, FLOPs per image
serving         the exported SavedModel's latency, throughput and ``ganomaly predict``
torch_reference the PyTorch original's speed, with ``model``'s keys (needs torch)
mnist_table     the per-digit AUROC table of ``make benchmark``'s MNIST runs

They may import anything in the project; nothing in it imports them.
"""

import models  # noqa: F401 - TensorFlow's CPU settings, before anything imports TensorFlow
