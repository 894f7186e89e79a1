"""GANomaly in Keras 3: networks, losses, the training model and scoring.

Nothing here imports mlflow: tracking is the pipeline's business.
"""
