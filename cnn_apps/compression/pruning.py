"""Magnitude pruning with a sparsity schedule, with optional restoration (survey S0 §4.4).

* Han et al. (SEED_CHECKLIST F-18): a weight is pruned when its magnitude is below the layer's
  threshold; here the threshold of each Dense/Conv kernel is chosen so that a fraction ``s_t``
  of its weights is zero (``scope="layer"``), or one threshold over all kernels makes the
  fraction ``s_t`` hold for them together (``scope="global"``).
* Zhu & Gupta's gradual schedule: ``s_t = s_f + (s_i − s_f)·(1 − (t − t_0)/(t_1 − t_0))³``
  for ``t_0 ≤ t ≤ t_1``, updated every ``frequency`` steps (``s_i`` before ``t_0``, ``s_f`` after
  ``t_1``); ``"constant"`` prunes to ``s_f`` at ``t_0``.
* Restoration (F-19, dynamic network surgery, Guo et al.): with ``allow_regrowth=True`` each
  kernel keeps a dense shadow copy ``W̃``; the optimizer's update of the masked weight
  ``W̃∘T`` is added to ``W̃`` everywhere (the straight-through gradient of DNS), and every
  mask update re-ranks ``|W̃|``, so a pruned weight whose shadow regains magnitude comes back.

The masks are variables applied to the kernels after every train step by
:class:`PruningCallback`, so the forward pass always sees the sparse weights and the model
keeps its ordinary layers (nothing to strip but the callback; :func:`strip_pruning` applies
the final masks and reports the sparsity).
"""

from __future__ import annotations

import keras
import numpy as np

from cnn_apps.compression._graph import check_model, prunable_kernels, rebuild

SCHEDULES = ("polynomial", "constant")
SCOPES = ("layer", "global")


def polynomial_sparsity(step, final_sparsity, initial_sparsity=0.0, begin_step=0,
                        end_step=1000, power=3) -> float:
    """Zhu & Gupta: ``s_f + (s_i − s_f)·(1 − (t − t_0)/(t_1 − t_0))^power`` clipped to
    ``[t_0, t_1]``."""
    if end_step <= begin_step:
        return float(final_sparsity)
    progress = min(max((step - begin_step) / (end_step - begin_step), 0.0), 1.0)
    return float(final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power)


def magnitude_mask(values, sparsity):
    """0/1 mask (float32) that zeroes the ``round(sparsity·size)`` smallest ``|values|``."""
    flat = np.abs(np.asarray(values, dtype=np.float32)).ravel()
    k = int(round(float(sparsity) * flat.size))
    mask = np.ones(flat.size, dtype=np.float32)
    if k > 0:
        mask[np.argpartition(flat, k - 1)[:k]] = 0.0
    return mask.reshape(np.shape(values))


def _check_sparsity(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


class PruningCallback(keras.callbacks.Callback):
    """Keras callback that prunes ``model``'s kernels on a schedule while it trains.

    Args:
        model: the (built) model being trained; its Dense/Conv kernels are pruned in place.
        target_sparsity: final fraction ``s_f`` of zero weights in each kernel.
        schedule: ``"polynomial"`` (Zhu & Gupta, cubic) or ``"constant"``.
        begin_step, end_step: schedule window ``[t_0, t_1]`` in train steps (batches).
        frequency: steps between mask updates.
        initial_sparsity: ``s_i`` of the polynomial schedule.
        allow_regrowth: keep dense shadow weights so pruned weights can come back (DNS).
        layers: optional names of the layers to prune (default: every Dense/Conv kernel).
        scope: ``"layer"`` (each kernel reaches ``s_t``) or ``"global"`` (one magnitude
            threshold over all pruned kernels, so ``s_t`` holds for them together and small,
            large-magnitude layers such as the first conv keep more weights).

    The masks are re-applied after every train batch (the optimizer would otherwise move the
    pruned weights); evaluation and inference use the stored sparse kernels. Pass the callback
    to every ``fit`` of the pruning run: its step counter continues across calls.

    Example:
        >>> pruning = prune(model, 0.9, end_step=500)
        >>> model.fit(ds, epochs=5, callbacks=[pruning])
        >>> strip_pruning(pruning)["sparsity"]
        0.9
    """

    def __init__(self, model, target_sparsity, schedule="polynomial", begin_step=0,
                 end_step=1000, frequency=10, initial_sparsity=0.0, allow_regrowth=False,
                 layers=None, scope="layer"):
        super().__init__()
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.scope = scope
        check_model(model)
        self.target_sparsity = _check_sparsity(target_sparsity, "target_sparsity")
        self.initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        for value, name in ((begin_step, "begin_step"), (end_step, "end_step")):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if end_step < begin_step:
            raise ValueError(f"end_step must be >= begin_step, got {end_step} < {begin_step}")
        if isinstance(frequency, bool) or not isinstance(frequency, (int, np.integer)) \
                or frequency < 1:
            raise ValueError(f"frequency must be a positive integer, got {frequency!r}")
        self.schedule, self.begin_step, self.end_step = schedule, int(begin_step), int(end_step)
        self.frequency, self.allow_regrowth = int(frequency), bool(allow_regrowth)
        names = None if layers is None else set(layers)
        self.targets = [(layer, kernel) for layer, kernel in prunable_kernels(model)
                        if names is None or layer.name in names]
        if not self.targets:
            raise ValueError("model has no Dense/Conv kernels to prune"
                             + (f" among layers {sorted(names)}" if names else ""))
        self.pruned_model = model
        self.step = 0
        self.masks = [keras.Variable(np.ones(k.shape, "float32"), trainable=False,
                                     name=f"{layer.name}_prune_mask")
                      for layer, k in self.targets]
        self.shadows = ([keras.Variable(k.numpy(), trainable=False,
                                        name=f"{layer.name}_shadow")
                         for layer, k in self.targets] if self.allow_regrowth else None)
        self.current_sparsity = 0.0

    def sparsity_at(self, step) -> float:
        if step < self.begin_step:
            return self.initial_sparsity if self.schedule == "polynomial" else 0.0
        if self.schedule == "constant":
            return self.target_sparsity
        return polynomial_sparsity(step, self.target_sparsity, self.initial_sparsity,
                                   self.begin_step, self.end_step)

    def _update_masks(self, sparsity):
        sources = [(self.shadows[i] if self.allow_regrowth else kernel).numpy()
                   for i, (_, kernel) in enumerate(self.targets)]
        if self.scope == "global":
            # one magnitude threshold over all kernels (Han et al.'s single threshold)
            flat = magnitude_mask(np.concatenate([v.ravel() for v in sources]), sparsity)
            offsets = np.cumsum([0] + [v.size for v in sources])
            masks = [flat[a:b].reshape(v.shape) for a, b, v in
                     zip(offsets[:-1], offsets[1:], sources)]
        else:
            masks = [magnitude_mask(v, sparsity) for v in sources]
        for variable, mask in zip(self.masks, masks):
            variable.assign(mask)
        self.current_sparsity = sparsity

    def _apply_masks(self):
        for i, (_, kernel) in enumerate(self.targets):
            source = self.shadows[i] if self.allow_regrowth else kernel
            kernel.assign(keras.ops.multiply(source, self.masks[i]))

    def on_train_begin(self, logs=None):
        if self.step == 0:
            self._update_masks(self.sparsity_at(0))
        self._apply_masks()

    def on_train_batch_end(self, batch, logs=None):
        if self.allow_regrowth:
            # The optimizer moved W̃∘T to `kernel`; its update goes into the dense shadow.
            for i, (_, kernel) in enumerate(self.targets):
                applied = keras.ops.multiply(self.shadows[i], self.masks[i])
                self.shadows[i].assign_add(keras.ops.subtract(kernel, applied))
        self.step += 1
        in_window = self.begin_step <= self.step <= self.end_step
        due = (self.step - self.begin_step) % self.frequency == 0 or self.step == self.end_step
        if (in_window and due) or (self.schedule == "constant" and self.step == self.begin_step):
            self._update_masks(self.sparsity_at(self.step))
        self._apply_masks()

    def sparsity(self) -> float:
        """Achieved fraction of zero weights over the pruned kernels."""
        zeros = sum(int(np.sum(k.numpy() == 0)) for _, k in self.targets)
        return zeros / sum(int(np.prod(k.shape)) for _, k in self.targets)


def prune(model, target_sparsity, schedule="polynomial", allow_regrowth=False, begin_step=0,
          end_step=1000, frequency=10, initial_sparsity=0.0, layers=None,
          scope="layer") -> PruningCallback:
    """Magnitude-prune ``model`` in place while it trains: returns the :class:`PruningCallback`
    to pass to ``fit`` (see it for the arguments)."""
    return PruningCallback(model, target_sparsity, schedule=schedule, begin_step=begin_step,
                           end_step=end_step, frequency=frequency,
                           initial_sparsity=initial_sparsity, allow_regrowth=allow_regrowth,
                           layers=layers, scope=scope)


def strip_pruning(callback: PruningCallback) -> dict:
    """Apply ``callback``'s final masks to its model and return
    ``{"model", "sparsity", "layers": {name: sparsity}}``; the model has plain layers, so it
    saves and exports like any other (its zeros compress well on disk)."""
    if not isinstance(callback, PruningCallback):
        raise ValueError(f"callback must be a PruningCallback, got {type(callback).__name__}")
    callback._apply_masks()
    per_layer = {layer.name: float(np.mean(k.numpy() == 0)) for layer, k in callback.targets}
    return {"model": callback.pruned_model, "sparsity": callback.sparsity(),
            "layers": per_layer}


def magnitude_prune(model, sparsity, layers=None, scope="layer"):
    """One-shot magnitude pruning: a copy of ``model`` whose Dense/Conv kernels have the
    ``sparsity`` fraction of smallest-magnitude weights set to zero (per kernel, or over all
    of them with ``scope="global"``)."""
    copy = rebuild(model)
    pruning = PruningCallback(copy, sparsity, schedule="constant", layers=layers, scope=scope)
    pruning.on_train_begin()
    return copy
