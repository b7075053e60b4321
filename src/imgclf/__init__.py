"""imgclf: train and serve an image classifier on the Amazon SageMaker container contract."""

__version__ = "0.1.0"
