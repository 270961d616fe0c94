"""Choose a ``tf.distribute`` strategy from the ``strategy`` config key, and derive the
per-replica batch size and the scaled learning rate from the global batch size.

Strategies (``strategy`` key):

* ``auto``: a TPU when one is configured (config ``tpu`` or ``$TPU_NAME``), Mirrored over all
  GPUs when there are several, else the default (single-device) strategy.
* ``one_device``: the first GPU, else the CPU.
* ``mirrored``: synchronous data parallelism over all local GPUs, or over all logical CPU
  devices when there is no GPU (configure them before TensorFlow initializes).
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the cluster described by
  ``TF_CONFIG`` (``cluster_resolver: tf_config``, the default), Slurm (``slurm``) or
  Kubernetes (``kubernetes``). Without a cluster it runs as a one-worker cluster. Training
  then goes through the custom loop of ``cnn_apps.training.distributed``.
* ``tpu``: ``TPUStrategy`` on the TPU named by config ``tpu`` (``local`` on a TPU VM, a name,
  or ``grpc://host:8470``) or ``$TPU_NAME``.
* ``parameter_server``: ``ParameterServerStrategy``; needs a cluster with ``chief``,
  ``worker`` and ``ps`` jobs. ``train()`` runs on the chief and drives the workers through
  the asynchronous loop of ``cnn_apps.training.parameter_server``; workers and ps tasks run
  ``cnn-apps serve-cluster``.

``tpu`` and ``parameter_server`` without their cluster fail before anything is built.

Global batch (``batch_size``) and learning rate: the batch size in a config is the GLOBAL
batch, split evenly over the replicas (per-replica = global / replicas, an error when not
divisible). With ``lr_scaling: linear`` the learning rate is scaled by the linear scaling
rule (Goyal et al. 2017): ``lr = learning_rate * batch_size / lr_base_batch``; with ``none``
(the default) ``learning_rate`` is used as given.

Example::

    strategy = get_strategy("mirrored")
    plan = batch_plan(64, strategy.num_replicas_in_sync, 0.002, "linear", 32)
    print(plan.describe(strategy))
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from cnn_apps.errors import ConfigError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu", "parameter_server")
CLUSTER_RESOLVERS = ("tf_config", "slurm", "kubernetes")
LR_SCALING = ("none", "linear")

# One cluster strategy per process: MultiWorkerMirrored configures the collective ops of the
# eager context and TPUs are initialized once, so a second train() in the process reuses it.
_CLUSTER_STRATEGIES: dict = {}


def get_strategy(name: str = "auto", *, tpu: str | None = None,
                 cluster_resolver: str | None = None):
    """The ``tf.distribute.Strategy`` for ``name`` (see the module doc).

    ``tpu``: TPU name/address for ``tpu`` (and for ``auto``, which picks the TPU when set);
    ``cluster_resolver``: ``tf_config`` | ``slurm`` | ``kubernetes`` for ``multi_worker`` and
    ``parameter_server`` (``None`` = ``tf_config``).

    Under ``multi_worker`` call this before any other TensorFlow op of the process.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"strategy '{name}' is not one of {', '.join(STRATEGIES)}")
    resolver_kind = cluster_resolver or "tf_config"
    if resolver_kind not in CLUSTER_RESOLVERS:
        raise ConfigError(f"cluster_resolver '{cluster_resolver}' is not one of "
                          f"{', '.join(CLUSTER_RESOLVERS)} (or null for TF_CONFIG)")
    tpu_address = tpu or os.environ.get("TPU_NAME") or None
    if name == "tpu" and not tpu_address:
        raise ConfigError("strategy 'tpu' needs a TPU cluster resolver: set the config key "
                          "'tpu' (a TPU name, grpc://host:8470, or 'local' on a TPU VM) or the "
                          "TPU_NAME environment variable")
    if name == "parameter_server":
        check_parameter_server_cluster(resolver_kind)

    import tensorflow as tf

    if name == "tpu" or (name == "auto" and tpu_address):
        return _tpu_strategy(tpu_address)
    if name == "multi_worker":
        return _multi_worker_strategy(resolver_kind)
    if name == "parameter_server":
        key = ("parameter_server", resolver_kind)
        if key not in _CLUSTER_STRATEGIES:
            # ClusterCoordinator fault tolerance: RPCs to a lost worker fail fast and the
            # coordinator re-runs the step elsewhere (set before the first gRPC channel).
            os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
            _CLUSTER_STRATEGIES[key] = tf.distribute.ParameterServerStrategy(
                _resolver(resolver_kind))
        return _CLUSTER_STRATEGIES[key]
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _cluster(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None, {}
    return resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict()


def is_chief(strategy) -> bool:
    """True on the worker that writes checkpoints, logs and exports (``chief``, or ``worker``
    0 when the cluster has no chief job; always true outside multi-worker training)."""
    if not is_multi_worker(strategy):
        return True
    task_type, task_id, cluster = _cluster(strategy)
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def worker_count(strategy) -> int:
    """Number of training workers (chief included) of a multi-worker strategy, else 1."""
    if not is_multi_worker(strategy):
        return 1
    _, _, cluster = _cluster(strategy)
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


@dataclass(frozen=True)
class BatchPlan:
    """Global vs per-replica batch and the learning rate after scaling."""

    global_batch: int | None
    replicas: int
    per_replica_batch: int | None
    base_learning_rate: float
    learning_rate: float
    lr_scaling: str
    lr_base_batch: int | None

    def describe(self, strategy=None) -> str:
        where = ""
        if strategy is not None:
            kind = "MultiWorkerMirroredStrategy" if is_multi_worker(strategy) \
                else type(strategy).__name__
            where = f"strategy {kind}"
            workers = worker_count(strategy)
            where += f" ({workers} workers), " if workers > 1 else ", "
        rule = ("" if self.lr_scaling == "none" else
                f" = {self.base_learning_rate:g} x {self.global_batch}/{self.lr_base_batch}")
        batches = ("batches set by the task" if self.global_batch is None else
                   f"global batch {self.global_batch} = {self.per_replica_batch} per replica")
        return (f"{where}{self.replicas} replica(s): {batches}; "
                f"learning rate {self.learning_rate:g}"
                f"{rule} (lr_scaling {self.lr_scaling})")


def batch_plan(global_batch, replicas, learning_rate, lr_scaling="none",
               lr_base_batch=None) -> BatchPlan:
    """Split ``global_batch`` over ``replicas`` and scale ``learning_rate``.

    ``lr_scaling``: ``none`` keeps the rate; ``linear`` multiplies it by
    ``global_batch / lr_base_batch`` (``lr_base_batch`` defaults to ``global_batch``, i.e.
    no change until the batch is changed away from the base).
    """
    lr_scaling = lr_scaling or "none"
    if global_batch is None:  # the task sets its own batches (no batch_size key)
        if lr_scaling != "none":
            raise ConfigError(f"lr_scaling '{lr_scaling}' needs a batch_size (global batch)")
        return BatchPlan(None, replicas, None, float(learning_rate), float(learning_rate),
                         "none", None)
    if not isinstance(global_batch, int) or isinstance(global_batch, bool) or global_batch < 1:
        raise ConfigError(f"batch_size must be a positive integer (the global batch), "
                          f"got {global_batch!r}")
    if global_batch % replicas:
        raise ConfigError(f"batch_size {global_batch} (the global batch) must be divisible by "
                          f"the number of replicas ({replicas})")
    if lr_scaling not in LR_SCALING:
        raise ConfigError(f"lr_scaling must be one of {', '.join(LR_SCALING)}, "
                          f"got '{lr_scaling}'")
    base_batch = global_batch if lr_base_batch is None else lr_base_batch
    if not isinstance(base_batch, int) or isinstance(base_batch, bool) or base_batch < 1:
        raise ConfigError(f"lr_base_batch must be a positive integer, got {lr_base_batch!r}")
    learning_rate = float(learning_rate)
    scaled = learning_rate * global_batch / base_batch if lr_scaling == "linear" \
        else learning_rate
    return BatchPlan(global_batch, replicas, global_batch // replicas, learning_rate, scaled,
                     lr_scaling, base_batch)


def _resolver(kind: str):
    import tensorflow as tf

    resolvers = tf.distribute.cluster_resolver
    if kind == "slurm":
        try:
            return resolvers.SlurmClusterResolver()
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ConfigError(f"cluster_resolver 'slurm': not inside a Slurm job step "
                              f"(srun) or its environment is incomplete ({exc})") from None
    if kind == "kubernetes":
        try:
            return resolvers.KubernetesClusterResolver()
        except ImportError as exc:
            raise ConfigError("cluster_resolver 'kubernetes' needs the 'kubernetes' Python "
                              f"client (pip install kubernetes): {exc}") from None
    return resolvers.TFConfigClusterResolver()


def _tf_config_cluster() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}
    try:
        return (json.loads(raw) or {}).get("cluster") or {}
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON with a 'cluster' mapping: {exc}") \
            from None


def check_parameter_server_cluster(kind: str = "tf_config", coordinator: bool = False) -> None:
    """Fail fast (before TensorFlow builds anything) without a chief + worker + ps cluster.

    ``coordinator=True`` (``train()``): this process must also be the ``chief`` task; worker
    and ps tasks run ``cnn-apps serve-cluster`` instead.
    """
    if kind != "tf_config":
        return  # Slurm/Kubernetes describe the cluster themselves; the resolver checks it.
    cluster = _tf_config_cluster()
    missing = [job for job in ("chief", "worker", "ps") if not cluster.get(job)]
    if missing:
        raise ConfigError(
            "strategy 'parameter_server' needs a cluster: TF_CONFIG must describe 'chief', "
            f"'worker' and 'ps' jobs (missing: {', '.join(missing)}); see docs/distributed.md")
    task_type = (json.loads(os.environ["TF_CONFIG"]).get("task") or {}).get("type")
    if coordinator and task_type != "chief":
        raise ConfigError(
            f"strategy 'parameter_server': training runs on the 'chief' task, but TF_CONFIG's "
            f"task type is {task_type!r}; run 'cnn-apps serve-cluster' on worker and ps "
            "tasks (docs/distributed.md)")


def _multi_worker_strategy(kind: str):
    import tensorflow as tf

    key = ("multi_worker", kind)
    if key not in _CLUSTER_STRATEGIES:
        resolver = _resolver(kind)
        cluster = resolver.cluster_spec().as_dict()
        if cluster and not (cluster.get("worker") or cluster.get("chief")):
            raise ConfigError("strategy 'multi_worker': the cluster has no 'worker' or "
                              "'chief' job (TF_CONFIG / resolver)")
        try:
            _CLUSTER_STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy(
                cluster_resolver=resolver)
        except RuntimeError as exc:  # the eager context was initialized first
            raise ConfigError(f"strategy 'multi_worker' must be created before any other "
                              f"TensorFlow op of the process: {exc}") from None
    return _CLUSTER_STRATEGIES[key]


def _tpu_strategy(address: str):
    import tensorflow as tf

    key = ("tpu", address)
    if key not in _CLUSTER_STRATEGIES:
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
            if address != "local":
                tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            _CLUSTER_STRATEGIES[key] = tf.distribute.TPUStrategy(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as exc:
            raise ConfigError(f"strategy 'tpu': cannot connect to TPU '{address}' "
                              f"({type(exc).__name__}: {exc})") from None
    return _CLUSTER_STRATEGIES[key]
