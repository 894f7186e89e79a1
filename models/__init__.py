"""GANomaly in Keras 3: networks, losses, the training model and scoring.

Nothing here imports mlflow: tracking is the pipeline's business.

Importing this package sets TensorFlow's CPU settings, so it must come before
the first ``import tensorflow`` (the pipeline's packages import it first):
oneDNN's kernels, which TensorFlow enables by default only on CPUs with
AVX-512, train and score about twice as fast as its Eigen kernels on AVX2
CPUs too, with results equal up to float rounding (README: Speed). Set
``TF_ENABLE_ONEDNN_OPTS=0`` in the environment to keep the Eigen kernels.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
