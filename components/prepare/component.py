"""Prepare component: an ISPRS release (or generated scenes) -> a prepared dataset (`Dataset` artifact)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare(
    source: str,
    dataset: Output[Dataset],
    options: dict = {},  # noqa: B006 (KFP needs a literal default)
    output_uri: str = "",
) -> None:
    """Turn an ISPRS Potsdam/Vaihingen release (zips or folders, local or s3://) into a prepared dataset.

    Args:
        source: the release folder or URI (`cdseg synth` writes the same layout).
        dataset: the prepared dataset (manifest, patches, statistics); metadata lists classes, bands, splits.
        options: other `cdseg prepare` options as dotted keys, e.g. `{"channels": "RGBIR", "workers": 2}`.
        output_uri: write the prepared dataset here (an s3:// prefix or a PVC path, reachable from a
            PyTorchJob's pods) instead of into the artifact; the artifact then points to it.
    """
    import logging

    from cdseg.config import load_config
    from cdseg.data.config import PrepareConfig
    from cdseg.data.prepare import run_prepare
    from cdseg.errors import ConfigError
    from components.artifacts import flatten_options, point_to, setup_logging, typed_options

    setup_logging()
    if not source:
        raise ConfigError("prepare: source is empty; pass the ISPRS release folder or URI (cdseg synth writes one)")
    cli = flatten_options(options)
    for reserved in ("input", "output"):
        if reserved in cli:
            raise ConfigError(f"prepare: options[{reserved!r}] is set by the component; use the component's source / output_uri parameters")
    target = output_uri or dataset.path
    cfg = load_config(PrepareConfig, cli={**typed_options(PrepareConfig, cli), "input": source, "output": target})
    logging.getLogger("cdseg.components").info("preparing %s -> %s", source, target)
    result = run_prepare(cfg)
    uri = str(result) if isinstance(result, str) and result else target
    if output_uri:
        point_to(dataset, uri)

    from cdseg.data.prepared import PreparedDataset

    manifest = PreparedDataset.open(uri).manifest
    dataset.metadata["classes"] = list(manifest.get("classes", []))
    dataset.metadata["bands"] = list(manifest.get("bands", []))
    dataset.metadata["scenes"] = {k: len(v) for k, v in manifest.get("splits", {}).items()}
    if "patch_size" in manifest:
        dataset.metadata["patch_size"] = manifest["patch_size"]
