"""Compile the pipeline of a task to YAML (`cdseg pipeline compile`); the shipped ones live in `compiled/`."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipelines.factory import SHIPPED_TASKS, BuildOptions, make_pipeline

#: where the checked-in YAML of the shipped tasks lives
COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def compiled_name(task: str) -> str:
    """`<task>.yaml` (a task YAML path gives its stem)."""
    stem = task.rsplit("/", 1)[-1]
    for suffix in (".yaml", ".yml"):
        stem = stem.removesuffix(suffix)
    return f"{stem}.yaml"


def compile_task(task: str, output_dir: str | Path = COMPILED_DIR, *, options: BuildOptions | None = None,
                 num_steps: int | None = None) -> Path:
    """Compile `task`'s pipeline to `<output_dir>/<task>.yaml` (written atomically) and return the path."""
    from cdseg.utils.atomic import atomic_file

    out = Path(output_dir) / compiled_name(task)
    out.parent.mkdir(parents=True, exist_ok=True)
    pipeline = make_pipeline(task, num_steps=num_steps, options=options)
    tmp = out.with_name(f".{out.name}.compiling.yaml")
    try:
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(tmp))
        with atomic_file(out, "wb") as handle:
            handle.write(tmp.read_bytes())  # type: ignore[attr-defined]
        out.chmod(0o644)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def compile_all(output_dir: str | Path = COMPILED_DIR, *, options: BuildOptions | None = None) -> list[Path]:
    """Compile every shipped task (`offline`, `222a`, `321`, `6s`)."""
    return [compile_task(task, output_dir, options=options) for task in SHIPPED_TASKS]
