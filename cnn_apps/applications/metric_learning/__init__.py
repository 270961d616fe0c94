"""Metric learning (survey S0 §3.4.3-§3.4.4): Siamese / triplet embedding networks."""

from cnn_apps.applications.metric_learning.model import (InBatchPairLoss, build_embedding_net,
                                                         pk_batch_indices, recall_at_k,
                                                         verification_auc)
from cnn_apps.applications.metric_learning.task import (LOSSES, MetricLearningTask, embed,
                                                        load_metric_data, make_loss)

TASK = MetricLearningTask()

__all__ = ["TASK", "MetricLearningTask", "InBatchPairLoss", "build_embedding_net",
           "pk_batch_indices", "recall_at_k", "verification_auc", "embed", "load_metric_data",
           "make_loss", "LOSSES"]
