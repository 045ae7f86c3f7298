"""Evaluate component: a checkpoint on whole test scenes -> metrics the KFP UI shows, and the results folder."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(
    data: Input[Dataset],
    model: Input[Model],
    results: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    per_class: Output[Markdown],
    samples: Output[HTML],
    history: Output[Artifact],
    earlier: Input[Artifact] | None = None,
    options: dict = {},  # noqa: B006 (KFP needs a literal default)
    method: str = "",
    run_id: str = "",
) -> float:
    """Evaluate the step's checkpoint on the prepared dataset's whole test scenes (old / new / all classes).

    Args:
        data: the prepared dataset.
        model: the checkpoint to evaluate (its card names task, step and classes).
        results: the evaluation folder (metrics.json, Markdown table, confusion matrix, previews, GeoTIFFs).
        metrics: old / new / all mIoU and mF1 (%), pixel accuracy.
        confusion: the confusion matrix with class names (rows: true class).
        per_class: the per-class table (IoU, F1, precision, recall).
        samples: prediction previews (input | ground truth | prediction) and the confusion-matrix image.
        history: the metrics of every step so far (`step_<k>/metrics.json`): `earlier`'s and this step's, for
            the report (so a task may have any number of steps).
        earlier: the previous step's `history` (none at step 0).
        options: other `cdseg test` options as dotted keys, e.g. `{"eval.window": 256, "eval.tta": true}`.
        method: the run's method, which labels the metrics; a checkpoint trained by another method (a step-0
            model shared between methods that train step 0 identically) keeps its own in `checkpoint_method`.
        run_id: the pipeline run's id: the `run` grouping key of the metrics pushed to a Pushgateway (when
            CDSEG_METRICS__PUSHGATEWAY is set), which the report step deletes.

    Returns:
        mIoU over all seen classes (%).
    """
    import shutil
    import tempfile

    from cdseg.config import load_config
    from cdseg.errors import ConfigError
    from cdseg.evaluate import run_test
    from cdseg.evaluate.config import TestConfig
    from components import artifacts
    from components.evaluate import render

    artifacts.setup_logging()
    cli = artifacts.flatten_options(options)
    taken = sorted(set(cli) & {"checkpoint", "dataset", "output"})
    if taken:
        raise ConfigError(f"evaluate: options {taken} are set by the component from its artifacts; remove them")
    work = tempfile.mkdtemp(prefix="cdseg-eval-")
    try:
        cfg = load_config(TestConfig, cli={**artifacts.typed_options(TestConfig, cli), "checkpoint": artifacts.location(model),
                                           "dataset": artifacts.location(data), "output": work,
                                           **({"push_run": run_id} if run_id else {})})
        result = run_test(cfg)
        eval_dir = render.find_eval_dir(work, result)
        shutil.copytree(eval_dir, results.path, dirs_exist_ok=True)
        render.relabel(result, method, results.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    render.extend_history(earlier.path if earlier is not None else None, results.path, history.path, result)
    render.fill(result, results.path, metrics=metrics, confusion=confusion, per_class=per_class, samples=samples)
    results.metadata.update(render.summary(result))
    return float(render.percent(result["mean"]["all"]["miou"]))
