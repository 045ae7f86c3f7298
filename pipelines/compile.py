"""Compile the pipeline of a task to YAML (`cdseg pipeline compile`); the shipped ones live in `compiled/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kfp import compiler

from pipelines.factory import SHIPPED_TASKS, BuildOptions, make_pipeline

#: where the checked-in YAML of the shipped tasks lives
COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


#: datasets whose pipelines are named after the task alone (they share their tasks)
ISPRS = ("potsdam", "vaihingen")


def compiled_name(task: str, dataset: str = "potsdam") -> str:
    """`<task>.yaml` for ISPRS tasks, `<dataset>-<task>.yaml` for other datasets (a task YAML path gives its stem)."""
    stem = task.rsplit("/", 1)[-1]
    for suffix in (".yaml", ".yml"):
        stem = stem.removesuffix(suffix)
    return f"{stem}.yaml" if dataset in ISPRS else f"{dataset}-{stem}.yaml"


def compile_task(task: str, output_dir: str | Path = COMPILED_DIR, *, options: BuildOptions | None = None,
                 num_steps: int | None = None, dataset: str = "potsdam", dataset_def: str | None = None) -> Path:
    """Compile `task`'s pipeline (the task of `dataset`, or of a dataset definition YAML) to
    `<output_dir>/<task>.yaml` (written atomically) and return the path."""
    name = dataset if not dataset_def else Path(dataset_def).stem
    out = Path(output_dir) / compiled_name(task, name)
    pipeline = make_pipeline(task, num_steps=num_steps, options=options, dataset=dataset,
                             dataset_def=dataset_def)  # an unknown task fails before any mkdir
    return write_compiled(pipeline, out)


def write_compiled(pipeline: Any, out: Path) -> Path:
    """Compile `pipeline` to `out`, atomically (a failed compile leaves no file and no partial one)."""
    from cdseg.utils.atomic import atomic_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.compiling.yaml")
    try:
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(tmp))
        with atomic_file(out, "wb") as handle:
            handle.write(tmp.read_bytes())  # type: ignore[attr-defined]
        out.chmod(0o644)
    finally:
        tmp.unlink(missing_ok=True)
    return out


#: keys that record who compiled a pipeline, not what it does (a kfp upgrade within the lock changes them)
PROVENANCE_KEYS = frozenset({"sdkVersion"})


def pipeline_structure(text: str) -> list[Any]:
    """The YAML documents of a compiled pipeline without provenance keys: what golden files compare."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in PROVENANCE_KEYS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return [strip(doc) for doc in yaml.safe_load_all(text)]


def structure_diff(expected: Any, actual: Any, path: str = "", limit: int = 10) -> list[str]:
    """Where two pipeline structures differ, as `path: expected != actual` lines (at most `limit`)."""
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                sub = f"{where}.{key}" if where else str(key)
                if key not in a:
                    out.append(f"{sub}: added")
                elif key not in b:
                    out.append(f"{sub}: removed")
                else:
                    walk(a[key], b[key], sub)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{i}]")
        elif a != b:
            out.append(f"{where}: {str(a)[:80]!r} != {str(b)[:80]!r}")

    walk(expected, actual, path)
    return out


def compile_all(output_dir: str | Path = COMPILED_DIR, *, options: BuildOptions | None = None) -> list[Path]:
    """Compile every shipped task (the ISPRS `offline`, `222a`, `321`, `6s`)."""
    return [compile_task(task, output_dir, options=options, dataset=dataset) for dataset, task in SHIPPED_TASKS]
