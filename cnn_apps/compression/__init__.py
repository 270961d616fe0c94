"""Model compression transforms (survey S0 §4): low-rank factorization, magnitude and filter
pruning, k-means weight quantization, HashedNets, XNOR binarization and int8 TFLite, plus the
``cnn-apps compress`` command (:func:`compress_run`)."""

from cnn_apps.compression.binary import xnor_lenet5
from cnn_apps.compression.command import compress_run, hash_dense_layers
from cnn_apps.compression.factorize import factorize
from cnn_apps.compression.filter_pruning import filter_prune
from cnn_apps.compression.int8 import TFLiteModel, quantize_int8
from cnn_apps.compression.pruning import (PruningCallback, magnitude_prune, polynomial_sparsity,
                                          prune, strip_pruning)
from cnn_apps.compression.quantization import quantize_weights

__all__ = ["factorize", "prune", "PruningCallback", "strip_pruning", "magnitude_prune",
           "polynomial_sparsity", "filter_prune", "quantize_weights", "quantize_int8",
           "TFLiteModel", "xnor_lenet5", "hash_dense_layers", "compress_run"]
