"""Small helpers shared by the loss modules (argument checks, labels, distances)."""

from __future__ import annotations

import numbers

from keras import ops

REDUCTION_DEFAULT = "sum_over_batch_size"


def check_choice(argument, value, choices):
    if value not in choices:
        raise ValueError(f"{argument} must be one of {list(choices)}, got {value!r}")
    return value


def check_non_negative(argument, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"{argument} must be a number >= 0, got {value!r}")
    return float(value)


def check_positive(argument, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
        raise ValueError(f"{argument} must be a number > 0, got {value!r}")
    return float(value)


def check_rank(argument, tensor, ranks, expected):
    rank = len(ops.shape(tensor))
    if rank not in ranks:
        raise ValueError(f"{argument} must have shape {expected}, got shape "
                         f"{tuple(ops.shape(tensor))}")


def integer_labels(y_true):
    """Integer class ids of shape (N,) from labels of shape (N,) or (N, 1) (any dtype)."""
    check_rank("y_true (integer labels)", y_true, (1, 2), "(N,) or (N, 1)")
    if len(ops.shape(y_true)) == 2 and ops.shape(y_true)[-1] not in (1, None):
        raise ValueError("y_true must hold one integer label per sample, shape (N,) or (N, 1), "
                         f"got shape {tuple(ops.shape(y_true))}")
    return ops.cast(ops.reshape(y_true, (-1,)), "int32")


def safe_sqrt(x):
    """sqrt(x) for x >= 0 whose gradient is 0 (not inf/NaN) where x == 0."""
    positive = ops.greater(x, 0.0)
    return ops.where(positive, ops.sqrt(ops.where(positive, x, ops.ones_like(x))),
                     ops.zeros_like(x))


def pairwise_squared_distances(embeddings):
    """‖z_i − z_j‖² for all pairs, shape (N, N), from embeddings of shape (N, D).

    Computed from explicit differences (memory O(N²·D)) rather than the Gram expansion, so
    identical embeddings give exactly 0 and the diagonal is exactly 0.
    """
    diff = ops.expand_dims(embeddings, 1) - ops.expand_dims(embeddings, 0)
    return ops.sum(ops.square(diff), axis=-1)


def pairwise_distances(embeddings, distance):
    squared = pairwise_squared_distances(embeddings)
    return squared if distance == "squared_l2" else safe_sqrt(squared)
