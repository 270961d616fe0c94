"""A distributed training loop for ``MultiWorkerMirroredStrategy`` (Keras 3's ``model.fit``
fails under it: keras-team/keras#20585, "Attempt to convert a value (PerReplica...)").

``DistributedTrainer(model, strategy, loss, metrics).fit(...)`` replaces ``model.fit`` for the
``multi_worker`` strategy and drives the same Keras callbacks through a
``keras.callbacks.CallbackList`` (backup/restore, best checkpoint, CSV and TensorBoard logs,
early stopping, NaN guard, learning-rate schedule, the user's own callbacks).

One synchronous data-parallel step (survey S0 §3.7: mini-batch SGD) over R replicas that hold
n_r examples of the global batch (N = Σ_r n_r):

    L = Σ_r Σ_{i∈r} ℓ_i / N  +  Σ_r Ω / R        (tf.nn.compute_average_loss with N,
                                                    tf.nn.scale_regularization_loss)
    g = Σ_r ∇_θ L_r                              (all-reduce sum inside apply_gradients)

so the update equals one single-device step on the whole global batch, also for a short last
batch (N is all-reduced, not assumed). Under ``mixed_float16`` the optimizer is Keras'
``LossScaleOptimizer``: the loss is multiplied by the dynamic scale before differentiation
and the gradients are unscaled (and the step skipped on inf/NaN) by the optimizer.

Data: every worker builds the same global batches (same seed) and keeps, per global batch,
the rows of its own replicas (``distribute_datasets_from_function`` with the
``InputContext``), so the global batches are exactly those of a single-process run.
Validation runs on every worker on its full local copy (the weights are identical), so
early stopping and checkpoint decisions agree on all workers without extra communication.

Example::

    trainer = DistributedTrainer(model, strategy, task.loss(config), task.metrics(config))
    history = trainer.fit(lambda: task.train_dataset(config), val_ds, epochs=3,
                          callbacks=[keras.callbacks.TerminateOnNaN()])
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cnn_apps.errors import ConfigError


class DistributedTrainer:
    """Custom ``strategy.run`` training loop with Keras callbacks.

    Args:
        model: a compiled ``keras.Model`` built in ``strategy.scope()`` (its optimizer is
            used; it must be built in the scope too: ``model.optimizer.build(...)``).
        strategy: the ``tf.distribute`` strategy (MultiWorkerMirrored, Mirrored, default).
        loss: a Keras loss, or a dict of losses keyed by the model's output names.
        metrics: ``None``, a list of Keras metrics, or a dict ``{output: metric | list}``;
            create them OUTSIDE ``strategy.scope()`` (they are updated on gathered
            predictions, on each worker).
        jit_compile: XLA-compile the per-replica forward/backward computation.
    """

    def __init__(self, model, strategy, loss, metrics=None, jit_compile=False):
        if type(model).train_step is not keras.Model.train_step:
            raise ConfigError(f"multi-worker training: model '{model.name}' has a custom "
                              "train_step, which the distributed loop cannot run")
        if model.optimizer is None:
            raise ValueError("model: compile the model before DistributedTrainer")
        self.model, self.strategy = model, strategy
        self.output_names = _output_names(model)
        self.losses = _loss_dict(loss, self.output_names)
        self.metrics = _metric_list(metrics, self.output_names)
        self.val_metrics = _fresh_copies(self.metrics)
        self.jit_compile = bool(jit_compile)
        self._loss_sum, self._example_count = 0.0, 0.0

    # -- per-replica computation ---------------------------------------------------------------
    def _per_example_loss(self, targets, outputs):
        total = None
        for name, loss_fn in self.losses.items():
            y_true, y_pred = targets[name], tf.cast(outputs[name], tf.float32)
            if isinstance(loss_fn, keras.losses.Loss):
                if y_true.dtype.is_floating:
                    y_true = tf.cast(y_true, tf.float32)
                values = loss_fn.call(y_true, y_pred)
            else:
                values = loss_fn(y_true, y_pred)
            values = tf.cast(values, tf.float32)
            if values.shape.rank and values.shape.rank > 1:
                # Keras' sum_over_batch_size: mean over every element = mean of per-example means.
                values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
            total = values if total is None else total + values
        return total

    def _loss_and_gradients(self, x, y, global_count):
        model = self.model
        with tf.GradientTape() as tape:
            outputs = _as_dict(model(x, training=True), self.output_names)
            per_example = self._per_example_loss(_as_dict(y, self.output_names), outputs)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_count)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(
                    tf.add_n([tf.cast(v, tf.float32) for v in model.losses]))
            scaled = model.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        return loss, gradients, outputs

    def _build_train_step(self):
        model, strategy = self.model, self.strategy
        compute = tf.function(self._loss_and_gradients, jit_compile=True) if self.jit_compile \
            else self._loss_and_gradients
        keep_predictions = bool(self.metrics)

        def replica_step(x, y):
            local_count = tf.shape(tf.nest.flatten(x)[0], out_type=tf.int64)[0]
            global_count = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, local_count)
            loss, gradients, outputs = compute(x, y, global_count)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            if keep_predictions:
                return loss, tf.cast(local_count, tf.float32), y, outputs
            return loss, tf.cast(local_count, tf.float32)

        @tf.function(reduce_retracing=True)
        def train_step(batch):
            x, y = batch
            results = strategy.run(replica_step, args=(x, y))
            loss = strategy.reduce(tf.distribute.ReduceOp.SUM, results[0], axis=None)
            count = strategy.reduce(tf.distribute.ReduceOp.SUM, results[1], axis=None)
            if keep_predictions:
                # All workers see the whole global batch's predictions: identical metrics.
                y_true, y_pred = tf.nest.map_structure(
                    lambda value: strategy.gather(value, axis=0), results[2:])
                return loss, count, y_true, y_pred
            return loss, count

        return train_step

    # -- data -----------------------------------------------------------------------------------
    def distribute(self, dataset_factory):
        """Distribute global batches: each replica gets its contiguous slice of every batch
        (the balanced split ``[n·r/R, n·(r+1)/R)``)."""
        # Built once, eagerly (not inside dataset_fn): seeded shuffles and augmentations use
        # the process' global seed as in model.fit, and reshuffle at each epoch's iteration.
        global_batches = dataset_factory()

        def dataset_fn(context):
            replicas = context.num_replicas_in_sync
            local = replicas // context.num_input_pipelines
            first_replica = context.input_pipeline_id * local

            def split(x, y):
                size = tf.shape(tf.nest.flatten(x)[0])[0]

                def part(j):
                    replica = tf.cast(j, tf.int32) + first_replica
                    start = size * replica // replicas
                    end = size * (replica + 1) // replicas
                    return tf.nest.map_structure(lambda t: t[start:end], (x, y))

                return tf.data.Dataset.range(local).map(part)

            return global_batches.flat_map(split)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # -- loop -----------------------------------------------------------------------------------
    def fit(self, dataset_factory, validation_data=None, epochs=1, initial_epoch=0,
            callbacks=(), verbose=0):
        """Train like ``model.fit``; ``dataset_factory()`` returns the ``tf.data`` dataset of
        global batches (called on each worker's input device). Returns the ``History``."""
        model = self.model
        if not model.optimizer.built:  # slot variables must be created in the scope
            with self.strategy.scope():
                model.optimizer.build(model.trainable_variables)
        callback_list = keras.callbacks.CallbackList(
            list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
            verbose=verbose, epochs=epochs, steps=None)
        train_step = self._build_train_step()
        evaluate = self._build_eval_step() if validation_data is not None else None
        distributed = self.distribute(dataset_factory)
        return self._epoch_loop(callback_list, initial_epoch, epochs, lambda: distributed,
                                train_step, evaluate, validation_data)

    def _epoch_loop(self, callback_list, initial_epoch, epochs, epoch_inputs, run_step,
                    evaluate, validation_data):
        """The epoch loop of both fits: ``epoch_inputs()`` (called after ``on_epoch_begin``,
        which sets the learning rate) gives one epoch's step inputs, ``run_step(input)`` one
        step's results; then metrics, inline evaluation and the epoch callbacks."""
        model = self.model
        model.stop_training = False
        model._initial_epoch = None
        callback_list.on_train_begin()
        initial_epoch = model._initial_epoch or initial_epoch  # set by BackupAndRestore
        training_logs = {}
        for epoch in range(initial_epoch, epochs):
            self._reset()
            callback_list.on_epoch_begin(epoch)
            for step, step_input in enumerate(epoch_inputs()):
                callback_list.on_train_batch_begin(step)
                logs = self._update(run_step(step_input))
                callback_list.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            epoch_logs = self._results()
            if evaluate is not None:  # inline evaluation (on the chief under parameter_server)
                epoch_logs.update({f"val_{k}": v for k, v in
                                   self._evaluate(evaluate, validation_data).items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            training_logs = epoch_logs
            if model.stop_training:
                break
        callback_list.on_train_end(logs=training_logs)
        return model.history

    def _reset(self):
        self._loss_sum, self._example_count = 0.0, 0.0
        for _, metric, _ in self.metrics:
            metric.reset_state()

    def _update(self, step_results):
        loss, count = float(step_results[0]), float(step_results[1])
        # Keras' loss tracker: the mean over examples of the per-batch mean loss.
        self._loss_sum += loss * count
        self._example_count += count
        if self.metrics:
            y_true, y_pred = step_results[2], step_results[3]
            for output, metric, _ in self.metrics:
                metric.update_state(y_true[output], y_pred[output])
        return self._results()

    def _results(self):
        logs = {"loss": self._loss_sum / max(self._example_count, 1.0)}
        for _, metric, log_name in self.metrics:
            logs[log_name] = float(keras.ops.convert_to_numpy(metric.result()))
        return logs

    def _build_eval_step(self):
        model = self.model

        def step(x, y):
            outputs = _as_dict(model(x, training=False), self.output_names)
            per_example = self._per_example_loss(_as_dict(y, self.output_names), outputs)
            loss = tf.reduce_mean(per_example)
            if model.losses:
                loss += tf.add_n([tf.cast(v, tf.float32) for v in model.losses])
            return loss, outputs

        return tf.function(step, jit_compile=self.jit_compile)

    def _evaluate(self, eval_step, dataset):
        metrics = self.val_metrics
        for _, metric, _ in metrics:
            metric.reset_state()
        loss_sum = count = 0.0
        for x, y in dataset:
            loss, outputs = eval_step(x, y)
            n = float(tf.shape(tf.nest.flatten(x)[0])[0])
            loss_sum, count = loss_sum + float(loss) * n, count + n
            targets = _as_dict(y, self.output_names)
            for output, metric, _ in metrics:
                metric.update_state(targets[output], outputs[output])
        logs = {"loss": loss_sum / max(count, 1.0)}
        for _, metric, log_name in metrics:
            logs[log_name] = float(np.asarray(metric.result()))
        return logs


def _output_names(model) -> list[str]:
    """Output names in the order the model returns them (dict keys for dict outputs)."""
    struct = getattr(model, "_outputs_struct", None)
    if isinstance(struct, dict):
        return list(struct)
    return list(getattr(model, "output_names", None) or ["output"])


def _as_dict(value, names):
    if isinstance(value, dict):
        return value
    if isinstance(value, (list, tuple)):
        return dict(zip(names, value))
    return {names[0]: value}


def _loss_dict(loss, names):
    if isinstance(loss, dict):
        unknown = sorted(set(loss) - set(names))
        if unknown:
            raise ValueError(f"loss: keys {unknown} are not model outputs ({names})")
        return {name: keras.losses.get(value) for name, value in loss.items()}
    if loss is None:
        raise ValueError("loss: the distributed loop needs the task's loss, got None")
    return {names[0]: keras.losses.get(loss)}


def _metric_list(metrics, names):
    """``[(output name, metric, log name)]``; log names follow ``model.fit`` (``top1`` for a
    single output, ``<output>_top1`` with several)."""
    if metrics is None:
        return []
    per_output = metrics if isinstance(metrics, dict) else {names[0]: metrics}
    entries = []
    for output, values in per_output.items():
        for metric in values if isinstance(values, (list, tuple)) else [values]:
            metric = keras.metrics.get(metric)
            if not isinstance(metric, keras.metrics.Metric):
                metric = keras.metrics.MeanMetricWrapper(metric, name=metric.__name__)
            log_name = metric.name if len(names) == 1 else f"{output}_{metric.name}"
            entries.append((output, metric, log_name))
    return entries


def _fresh_copies(entries):
    return [(output, type(metric).from_config(metric.get_config()), log_name)
            for output, metric, log_name in entries]
