"""Asynchronous data-parallel training with ``ParameterServerStrategy`` (issue 7).

The cluster has three kinds of tasks (``TF_CONFIG`` or a Slurm/Kubernetes resolver):

* ``ps`` tasks hold the variables (model weights, optimizer slots, the step counter and the
  learning rate), spread round-robin over the ps tasks;
* ``worker`` tasks run training steps: each reads the current weights from the ps tasks,
  computes the gradient of ONE batch of its own data shard and applies it to the ps
  variables, without waiting for the other workers;
* the ``chief`` runs ``train()`` (the coordinator): it builds the model, schedules steps on the
  workers through a ``tf.distribute.coordinator.ClusterCoordinator``, evaluates inline,
  and writes the run folder (checkpoints, logs, metrics, exports).

Worker and ps processes only run a ``tf.distribute.Server``: ``cnn-apps serve-cluster`` (or
``python -m cnn_apps.training.parameter_server``), see :func:`serve`.

One asynchronous step (survey S0 §3.7 mini-batch SGD, applied asynchronously as in
Dean et al. 2012, "Large Scale Distributed Deep Networks" / Downpour SGD): worker ``w``
reads θ_t (possibly a few updates old, since other workers write in between), and applies

    g_w = ∇_θ ( Σ_{i∈B_w} ℓ_i(θ_t) / |B_w|  +  Ω(θ_t) )      θ ← optimizer(θ, g_w)

with the configured Keras optimizer (its slots live on the ps tasks too). ``B_w`` is one
batch of ``batch_size`` examples; with R local replicas per worker (GPUs) the batch is split
over them and their gradients summed within the worker, as in ``DistributedTrainer``.
Unlike ``multi_worker`` the result is not that of a single-device run: the order of the
updates depends on the workers' timing.

Data: every worker builds the task's training pipeline itself (the dataset function is traced
on the chief and run on each worker) and keeps every W-th batch (``shard(W, worker index)``),
repeated without end; an epoch is ``steps_per_epoch`` scheduled steps, by default the
number of batches in one pass over the training split (what ``model.fit`` takes), handed out
to whichever worker is free. Steps whose worker fails are re-run on another worker by the
coordinator.

Example (on the chief; the workers and ps run ``cnn-apps serve-cluster``)::

    strategy = get_strategy("parameter_server")
    trainer = ParameterServerTrainer(model, strategy, task.loss(config), task.metrics(config))
    dataset_fn = per_worker_dataset_fn(lambda: task.train_dataset(config), strategy)
    trainer.fit(dataset_fn, val_ds, epochs=3, steps_per_epoch=20)
"""

from __future__ import annotations

import os
import sys

import keras
import tensorflow as tf

from cnn_apps.errors import ConfigError
from cnn_apps.training.distributed import DistributedTrainer, _as_dict

SERVER_JOBS = ("worker", "ps")

__all__ = ["ParameterServerTrainer", "fit_task", "per_worker_dataset_fn",
           "default_steps_per_epoch", "serve", "variable_devices", "cluster_jobs"]


# -- cluster ------------------------------------------------------------------------------------
def cluster_jobs(strategy) -> dict:
    """``{job: number of tasks}`` of the strategy's cluster."""
    # ParameterServerStrategy keeps its resolver private (its public ``cluster_resolver``
    # property is None in TF 2.21).
    resolver = getattr(strategy, "cluster_resolver", None) or strategy._cluster_resolver
    spec = resolver.cluster_spec()
    return {job: spec.num_tasks(job) for job in spec.jobs}


def variable_devices(model) -> dict:
    """``{variable path: device}`` of the model's and its optimizer's variables (under
    ``ParameterServerStrategy`` every device is a ``/job:ps/...`` one)."""
    variables = list(model.variables)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    return {v.path: getattr(v, "value", v).device for v in variables}


def serve(task_type: str | None = None, task_index: int | None = None,
          cluster_resolver: str | None = None, wait: bool = True):
    """Run this process' ``tf.distribute.Server`` for a ``worker`` or ``ps`` task.

    The cluster and (unless given) the task come from ``TF_CONFIG`` (``cluster_resolver``
    ``None``/``tf_config``) or from Slurm/Kubernetes. Blocks forever with ``wait=True`` (the
    chief's coordinator drives the server; stop the process when training is over).

    Example::

        TF_CONFIG='{"cluster": {...}, "task": {"type": "worker", "index": 0}}' \\
            cnn-apps serve-cluster
    """
    from cnn_apps.training.strategy import _resolver

    resolver = _resolver(cluster_resolver or "tf_config")
    cluster = resolver.cluster_spec()
    task_type = task_type or resolver.task_type
    task_index = resolver.task_id if task_index is None else int(task_index)
    if not cluster.jobs:
        raise ConfigError("serve-cluster: no cluster (set TF_CONFIG with 'chief', 'worker' and "
                          "'ps' jobs, or use --cluster-resolver slurm|kubernetes)")
    if task_type == "chief":
        raise ConfigError("serve-cluster: the 'chief' task runs the training program "
                          "(cnn-apps train TASK strategy=parameter_server), not a server")
    if task_type not in SERVER_JOBS:
        raise ConfigError(f"serve-cluster: task type must be one of {', '.join(SERVER_JOBS)}, "
                          f"got {task_type!r} (TF_CONFIG 'task' or --task-type)")
    if task_type not in cluster.jobs or not 0 <= (task_index or 0) < cluster.num_tasks(task_type):
        raise ConfigError(f"serve-cluster: task {task_type}:{task_index} is not in the "
                          f"cluster {cluster.as_dict()}")
    # Recommended for ClusterCoordinator fault tolerance: RPCs to a restarting peer fail fast
    # and are retried by the caller instead of hanging.
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    server = tf.distribute.Server(cluster, job_name=task_type, task_index=task_index or 0,
                                  protocol=getattr(resolver, "rpc_layer", None) or "grpc",
                                  start=True)
    print(f"[cnn_apps] serving {task_type}:{task_index or 0} at {server.target}", flush=True)
    if wait:
        server.join()
    return server


# -- data -----------------------------------------------------------------------------------------
def _disallow_variables(next_creator, **kwargs):
    raise ConfigError(
        "strategy 'parameter_server': the task's training pipeline creates variables (e.g. "
        "Keras random augmentation layers, which own a seed variable), but under "
        "parameter_server each worker builds the pipeline from a traced function where no "
        "variable can live; turn the random augmentation off (augment.shift=0 "
        "augment.rotation=0 augment.zoom=0 augment.brightness=0 augment.contrast=0 "
        "augment.horizontal_flip=false) or use strategy=multi_worker")


def per_worker_dataset_fn(dataset_factory, strategy, num_workers: int | None = None):
    """The dataset function each worker runs, traced here (a ``ConcreteFunction`` for
    ``ClusterCoordinator.create_per_worker_dataset``).

    ``dataset_factory()`` returns the task's batched training dataset. Each worker keeps
    every ``num_workers``-th batch starting at its own index (disjoint shards of every pass),
    repeats it without end, and splits each batch over its local replicas.
    """
    num_workers = num_workers or cluster_jobs(strategy).get("worker", 1)

    def dataset_fn(context):
        worker = tf.distribute.coordinator.experimental_get_current_worker_index()
        batches = dataset_factory().shard(num_workers, worker).repeat()
        replicas = context.num_replicas_in_sync // context.num_input_pipelines
        if replicas == 1:
            return batches

        def split(x, y):
            size = tf.shape(tf.nest.flatten(x)[0])[0]

            def part(j):
                start, end = size * j // replicas, size * (j + 1) // replicas
                return tf.nest.map_structure(lambda t: t[start:end], (x, y))

            return tf.data.Dataset.range(replicas, output_type=tf.int32).map(part)

        return batches.flat_map(split)

    def per_worker():
        return strategy.distribute_datasets_from_function(dataset_fn)

    with tf.variable_creator_scope(_disallow_variables):
        return tf.function(per_worker, autograph=False).get_concrete_function()


def default_steps_per_epoch(dataset, num_workers: int) -> int:
    """Batches in one pass over ``dataset`` (the task's training dataset); every worker's
    shard must hold at least one batch."""
    batches = int(dataset.cardinality())
    if batches < 0:
        raise ConfigError("strategy 'parameter_server': the training dataset has no known "
                          "length, so an epoch's number of steps cannot be derived")
    if batches < num_workers:
        raise ConfigError(f"strategy 'parameter_server': one pass over the training data has "
                          f"{batches} batch(es), fewer than the {num_workers} workers; lower "
                          f"batch_size so every worker's shard holds at least one batch")
    return batches


# -- training loop ------------------------------------------------------------------------------
class ParameterServerTrainer(DistributedTrainer):
    """``model.fit`` for ``ParameterServerStrategy``: a ``ClusterCoordinator`` schedules
    ``steps_per_epoch`` asynchronous steps per epoch on the workers, joins, evaluates on the
    chief and runs the same Keras callbacks as ``DistributedTrainer`` (backup/restore, best
    checkpoint, CSV/TensorBoard logs, early stopping, NaN guard, learning-rate schedule).

    Args:
        model: a compiled ``keras.Model`` built in ``strategy.scope()`` (variables on ps).
        strategy: a ``ParameterServerStrategy``.
        loss, metrics: as for ``DistributedTrainer`` (metrics are updated on the chief from
            each step's fetched targets and predictions).

    Batch-level callbacks see every step's logs in schedule order after the epoch's
    ``join()`` (the steps run asynchronously, their results arrive together).
    """

    def __init__(self, model, strategy, loss, metrics=None):
        if type(model).train_step is not keras.Model.train_step:
            raise ConfigError(f"parameter_server training: model '{model.name}' has a custom "
                              "train_step, which the coordinator loop cannot run")
        super().__init__(model, strategy, loss, metrics, jit_compile=False)
        self.coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)

    def _build_train_step(self):
        model, strategy = self.model, self.strategy
        keep_predictions = bool(self.metrics)
        replicas = strategy.num_replicas_in_sync

        def replica_step(x, y):
            local_count = tf.shape(tf.nest.flatten(x)[0], out_type=tf.int64)[0]
            count = local_count if replicas == 1 else tf.distribute.get_replica_context() \
                .all_reduce(tf.distribute.ReduceOp.SUM, local_count)
            loss, gradients, outputs = self._loss_and_gradients(x, y, count)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            if keep_predictions:
                return loss, tf.cast(local_count, tf.float32), \
                    _as_dict(y, self.output_names), outputs
            return loss, tf.cast(local_count, tf.float32)

        @tf.function
        def train_step(iterator):
            x, y = next(iterator)
            results = strategy.run(replica_step, args=(x, y))
            loss = strategy.reduce(tf.distribute.ReduceOp.SUM, results[0], axis=None)
            count = strategy.reduce(tf.distribute.ReduceOp.SUM, results[1], axis=None)
            if keep_predictions:  # this worker's rows, in replica order
                y_true, y_pred = tf.nest.map_structure(
                    lambda value: tf.concat(strategy.experimental_local_results(value), 0),
                    results[2:])
                return loss, count, y_true, y_pred
            return loss, count

        return train_step

    def fit(self, dataset_fn, validation_data=None, epochs=1, steps_per_epoch=None,
            initial_epoch=0, callbacks=(), verbose=0):
        """Train like ``model.fit``; ``dataset_fn`` comes from :func:`per_worker_dataset_fn`.
        Returns the ``History``."""
        if not steps_per_epoch or int(steps_per_epoch) < 1:
            raise ConfigError("parameter_server training needs steps_per_epoch >= 1 (the "
                              "per-worker datasets repeat without end)")
        model = self.model
        if not model.optimizer.built:  # slot variables must be created in the scope (on ps)
            with self.strategy.scope():
                model.optimizer.build(model.trainable_variables)
        callback_list = keras.callbacks.CallbackList(
            list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
            verbose=verbose, epochs=epochs, steps=int(steps_per_epoch))
        train_step = self._build_train_step()
        evaluate = self._build_eval_step() if validation_data is not None else None
        iterator = iter(self.coordinator.create_per_worker_dataset(dataset_fn))

        def epoch_inputs():  # schedule the epoch's steps on the workers, wait for all of them
            pending = [self.coordinator.schedule(train_step, args=(iterator,))
                       for _ in range(int(steps_per_epoch))]
            self.coordinator.join()  # raises the first error a step hit
            return pending

        return self._epoch_loop(callback_list, initial_epoch, epochs, epoch_inputs,
                                lambda remote: remote.fetch(), evaluate, validation_data)


def fit_task(task, config, model, strategy, validation_data, *, epochs, initial_epoch=0,
             callbacks=(), verbose=0, announce=True):
    """``train()``'s parameter-server phase: trace the per-worker pipeline of ``task``, derive
    the epoch's steps, and run :class:`ParameterServerTrainer` on the compiled ``model``."""
    jobs = cluster_jobs(strategy)
    workers = jobs.get("worker", 0)
    dataset_fn = per_worker_dataset_fn(lambda: task.train_dataset(config), strategy, workers)
    steps = default_steps_per_epoch(task.train_dataset(config), workers)
    if announce:
        print(f"[cnn_apps] parameter_server: {workers} worker(s), {jobs.get('ps', 0)} ps; "
              f"{steps} asynchronous steps of one batch per epoch", flush=True)
    trainer = ParameterServerTrainer(model, strategy, task.loss(config), task.metrics(config))
    return trainer.fit(dataset_fn, validation_data, epochs=epochs, steps_per_epoch=steps,
                       initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)


# -- command line ---------------------------------------------------------------------------------
def main(argv=None) -> int:
    """``python -m cnn_apps.training.parameter_server [--task-type worker|ps]
    [--task-index N] [--cluster-resolver tf_config|slurm|kubernetes]``: the same as
    ``cnn-apps serve-cluster``."""
    from cnn_apps.cli import main as cli_main

    return cli_main(["serve-cluster", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
