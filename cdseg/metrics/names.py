"""The metric catalogue: every Prometheus series cdseg exports, and how sink keys map onto them.

Pure data (no prometheus_client): the dashboard test, the docs and `cdseg.metrics.prometheus` all read it.
Names follow the Prometheus conventions: `cdseg_` prefix, base units, counters end in `_total`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: labels every trainer series carries (low cardinality: a handful of values each)
TRAIN_LABELS = ("task", "step", "rank", "method")
#: labels of evaluation series (scraped from the trainer's validation, or pushed by `cdseg test`)
EVAL_LABELS = ("task", "step", "method", "split")
ALLOWED_LABELS = frozenset({"task", "step", "rank", "split", "method", "term", "subset"})
#: grouping key labels of pushed groups (one group per pipeline run and incremental step)
GROUPING_LABELS = ("run", "step")
SUBSETS = ("old", "new", "all")

# Histogram buckets in seconds: sub-millisecond data waits up to multi-second steps.
DATA_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric; `name` is the exposed name (counters include `_total`)."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


TRAIN_SAMPLES = MetricSpec("cdseg_train_samples_total", "counter", "Training images processed", TRAIN_LABELS)
TRAIN_ITERATIONS = MetricSpec("cdseg_train_iterations_total", "counter", "Optimizer iterations completed", TRAIN_LABELS)
TRAIN_EPOCH = MetricSpec("cdseg_train_epoch", "gauge", "Current epoch (0-based)", TRAIN_LABELS)
TRAIN_GLOBAL_STEP = MetricSpec("cdseg_train_global_step", "gauge", "Iteration number of the last logged values", TRAIN_LABELS)
TRAIN_LOSS = MetricSpec("cdseg_train_loss", "gauge", "Last logged value of each loss term", TRAIN_LABELS + ("term",))
TRAIN_LR = MetricSpec("cdseg_train_learning_rate", "gauge", "Current learning rate", TRAIN_LABELS)
TRAIN_THROUGHPUT = MetricSpec(
    "cdseg_train_throughput_samples_per_second", "gauge", "Images per second of this rank (smoothed)", TRAIN_LABELS
)
TRAIN_DATA_WAIT = MetricSpec(
    "cdseg_train_data_wait_seconds", "histogram", "Time an iteration waited for its batch", TRAIN_LABELS, DATA_WAIT_BUCKETS
)
TRAIN_STEP_TIME = MetricSpec(
    "cdseg_train_step_duration_seconds", "histogram", "Wall time of one iteration, data wait included", TRAIN_LABELS,
    STEP_BUCKETS,
)
GPU_MEMORY = MetricSpec("cdseg_gpu_memory_allocated_bytes", "gauge", "GPU memory allocated by tensors", TRAIN_LABELS)
GPU_MEMORY_PEAK = MetricSpec("cdseg_gpu_memory_max_allocated_bytes", "gauge", "Peak GPU memory allocated", TRAIN_LABELS)
EVAL_MIOU = MetricSpec("cdseg_eval_miou_ratio", "gauge", "Mean IoU (0-1) of old / new / all classes", EVAL_LABELS + ("subset",))
EVAL_ACC = MetricSpec("cdseg_eval_pixel_accuracy_ratio", "gauge", "Pixel accuracy (0-1)", EVAL_LABELS + ("subset",))
EVAL_LOSS = MetricSpec("cdseg_eval_loss", "gauge", "Loss terms on the validation split", EVAL_LABELS + ("term",))
JOB_DURATION = MetricSpec("cdseg_job_duration_seconds", "gauge", "Wall time of a short step (pushed)", ("task", "method"))
JOB_LAST_SUCCESS = MetricSpec(
    "cdseg_job_last_success_timestamp_seconds", "gauge", "Unix time a short step last succeeded (pushed)", ("task", "method")
)
JOB_VALUE = MetricSpec("cdseg_job_value", "gauge", "Any other summary value a short step pushed", ("task", "method", "term"))

#: the series a trainer's /metrics endpoint serves
TRAINER_METRICS = (TRAIN_SAMPLES, TRAIN_ITERATIONS, TRAIN_EPOCH, TRAIN_GLOBAL_STEP, TRAIN_LOSS, TRAIN_LR, TRAIN_THROUGHPUT,
                   TRAIN_DATA_WAIT, TRAIN_STEP_TIME, GPU_MEMORY, GPU_MEMORY_PEAK, EVAL_MIOU, EVAL_ACC, EVAL_LOSS)
#: the series short steps push
SUMMARY_METRICS = (EVAL_MIOU, EVAL_ACC, EVAL_LOSS, JOB_DURATION, JOB_LAST_SUCCESS, JOB_VALUE)
ALL_METRICS = {m.name: m for m in TRAINER_METRICS + SUMMARY_METRICS}
