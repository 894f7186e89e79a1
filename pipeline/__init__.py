"""Configuration, command line and wiring of the GANomaly pipeline stages."""

import models  # noqa: F401 - TensorFlow's CPU settings, before anything imports TensorFlow
