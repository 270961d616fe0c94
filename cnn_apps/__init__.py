"""cnn_apps: the CNN literature as Keras 3 layers, losses, backbones and task pipelines.

Importing the top-level package is cheap; subpackages import Keras/TensorFlow on use.
"""

__version__ = "0.1.0"
