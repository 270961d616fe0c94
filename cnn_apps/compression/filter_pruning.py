"""Filter pruning by the average percentage of zeros (APoZ; Hu et al., "Network Trimming").

Survey S0 §4.4 (SEED_CHECKLIST F-21): filters whose post-ReLU outputs are mostly zero on
held-out data are removed. For a Conv2D filter ``j`` with post-ReLU output ``a``:

    APoZ_j = mean over images n and positions (h, w) of [a[n, h, w, j] == 0]

Filters with ``APoZ_j > threshold`` are removed from the conv, from the per-channel layers that
follow it (BatchNormalization, ReLU, pooling, dropout) and the matching input channels of the
next layer (a Conv2D, or a Dense after Flatten / global pooling) are dropped, giving a smaller
dense model. A conv qualifies when its output reaches exactly one such consumer through
per-channel layers only and passes a ReLU on the way (convs feeding a residual Add or a
Concatenate are left alone). The graphs searched are the model itself and Functional models
nested directly in it (e.g. the ``backbone`` of a classifier).
"""

from __future__ import annotations

import keras
import numpy as np

from cnn_apps.compression._graph import check_model, rebuild

_CHANNELWISE = (keras.layers.BatchNormalization, keras.layers.ReLU, keras.layers.Activation,
                keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.Dropout,
                keras.layers.SpatialDropout2D, keras.layers.Identity)
_GLOBAL_POOL = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def _is_relu(layer):
    if isinstance(layer, keras.layers.ReLU):
        return (layer.negative_slope == 0 and layer.threshold == 0)
    activation = getattr(layer, "activation", None)
    return activation is keras.activations.relu or getattr(activation, "__name__", "") == "relu"


def _graph_maps(graph):
    consumers, producers = {}, {}
    for layer in graph.layers:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                consumers.setdefault(id(t), []).append(layer)
            for t in node.outputs:
                producers[id(t)] = (layer, t)
    return consumers, producers


def _plan_chain(conv, graph, consumers):
    """``(relu tensor, channel-wise layers, consumer, consumer kind, flatten shape)`` or None."""
    if len(conv._inbound_nodes) != 1:
        return None
    t = conv._inbound_nodes[0].outputs[0]
    graph_outputs = {id(o) for o in graph.outputs}
    relu = t if _is_relu(conv) else None
    chain, flatten_shape, kind = [], None, None
    while True:
        if id(t) in graph_outputs:
            return None
        following = consumers.get(id(t), [])
        if len(following) != 1 or len(following[0]._inbound_nodes) != 1:
            return None
        layer = following[0]
        out = layer._inbound_nodes[0].outputs[0]
        if kind is None and isinstance(layer, _CHANNELWISE) and not (
                isinstance(layer, keras.layers.BatchNormalization) and layer.axis not in (-1, 3)):
            if isinstance(layer, keras.layers.Activation) and not _is_relu(layer):
                return None
            chain.append(layer)
            if relu is None and _is_relu(layer):
                relu = out
        elif kind is None and isinstance(layer, keras.layers.Flatten):
            flatten_shape, kind = tuple(t.shape[1:]), "flatten"
        elif kind is None and isinstance(layer, _GLOBAL_POOL):
            kind = "pool"
        elif kind is not None and isinstance(layer, keras.layers.Dropout):
            pass
        elif kind is not None and type(layer) is keras.layers.Dense:
            return (relu, chain, layer, kind, flatten_shape) if relu is not None else None
        elif kind is None and type(layer) is keras.layers.Conv2D and layer.groups == 1:
            return (relu, chain, layer, "conv", None) if relu is not None else None
        else:
            return None
        t = out


def _activations(model, graph, tensors, data, batch_size):
    """Values of ``graph`` tensors on ``data`` (inputs of ``model``), one array per tensor."""
    def single(values):
        return values[0] if len(values) == 1 else values

    probe_inputs = None
    if graph is not model:  # the values the nested graph is called on inside ``model``
        probe_inputs = keras.Model(single(model.inputs),
                                   single(graph._inbound_nodes[0].input_tensors))
    probe = keras.Model(single(graph.inputs), tensors)
    totals = None
    batches = data if not isinstance(data, np.ndarray) else \
        (data[i:i + batch_size] for i in range(0, len(data), batch_size))
    for batch in batches:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        x = probe_inputs(batch, training=False) if probe_inputs is not None else batch
        values = probe(x, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        zeros = [np.asarray(keras.ops.convert_to_numpy(v) <= 0).reshape(-1, v.shape[-1])
                 for v in values]
        sums = [(z.sum(0), len(z)) for z in zeros]
        totals = sums if totals is None else [(a + s, n + m) for (a, n), (s, m)
                                              in zip(totals, sums)]
    if totals is None:
        raise ValueError("data must hold at least one batch of model inputs")
    return [a / n for a, n in totals]


def filter_prune(model, data, threshold=0.9, min_filters=1, layers=None, batch_size=64):
    """A smaller copy of ``model`` without the Conv2D filters whose APoZ exceeds ``threshold``.

    Args:
        model: a built Functional model (raw inputs in).
        data: model inputs to measure APoZ on: an array ``(N, ...)`` or an iterable of
            batches (arrays or ``(inputs, targets)`` tuples, e.g. a ``tf.data`` dataset).
        threshold: APoZ above which a filter is removed, in [0, 1].
        min_filters: filters kept at least per layer (those with the lowest APoZ).
        layers: optional names of the convs to consider.

    Returns ``(new_model, report)`` with ``report[conv name] = {"apoz": [...], "kept": [...],
    "removed": int}``. Inference is unchanged for removed filters that were always zero.

    Example:
        >>> small, report = filter_prune(model, x_val, threshold=0.8)
        >>> small.count_params() <= model.count_params()
        True
    """
    check_model(model)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if isinstance(min_filters, bool) or not isinstance(min_filters, int) or min_filters < 1:
        raise ValueError(f"min_filters must be a positive integer, got {min_filters!r}")
    names = None if layers is None else set(layers)
    plans, report = {}, {}
    graphs = [model] + [g for g in model.layers if isinstance(g, keras.Model)
                        and hasattr(g, "_inbound_nodes") and len(g._inbound_nodes) == 1]
    for graph in graphs:
        consumers, _ = _graph_maps(graph)
        chains = []
        for layer in graph.layers:
            if type(layer) is keras.layers.Conv2D and layer.groups == 1 and (
                    names is None or layer.name in names):
                chain = _plan_chain(layer, graph, consumers)
                if chain is not None:
                    chains.append((layer, chain))
        if not chains:
            continue
        apoz = _activations(model, graph, [c[1][0] for c in chains], data, batch_size)
        for (conv, (_, chain, consumer, kind, flat_shape)), scores in zip(chains, apoz):
            keep = np.flatnonzero(scores <= threshold)
            if len(keep) < min_filters:
                keep = np.sort(np.argsort(scores, kind="stable")[:min_filters])
            report[conv.name] = {"apoz": scores.round(4).tolist(), "kept": keep.tolist(),
                                 "removed": int(len(scores) - len(keep))}
            if len(keep) == len(scores):
                continue
            plans.setdefault(id(conv), {})["out"] = keep
            for layer in chain:
                if layer.weights:
                    plans.setdefault(id(layer), {})["channels"] = keep
            if kind == "flatten":
                grid = np.arange(int(np.prod(flat_shape))).reshape(flat_shape)
                plans.setdefault(id(consumer), {})["rows"] = grid[..., keep].ravel()
            elif kind == "pool":
                plans.setdefault(id(consumer), {})["rows"] = keep
            else:
                plans.setdefault(id(consumer), {})["in"] = keep

    def replace(layer, x, **kwargs):
        plan = plans.get(id(layer))
        if plan is None:
            return None
        config = layer.get_config()
        weights = layer.get_weights()
        if "channels" in plan:
            weights = [w[plan["channels"]] for w in weights]
        if "rows" in plan:
            weights[0] = weights[0][plan["rows"]]
        if "in" in plan:
            weights[0] = weights[0][:, :, plan["in"], :]
        if "out" in plan:
            config["filters"] = len(plan["out"])
            weights[0] = weights[0][..., plan["out"]]
            if layer.use_bias:
                weights[1] = weights[1][plan["out"]]
        new = layer.__class__.from_config(config)
        out = new(x, **kwargs)
        new.set_weights(weights)
        return out

    return rebuild(model, replace), report
