"""The checked-in pipelines/compiled/*.yaml hold the pipeline `cdseg pipeline compile --all` produces today.

They are compared by structure (every component, input, default, executor and platform setting), not
byte for byte: the kfp SDK's version string is provenance, so a kfp upgrade within the lock's range
does not fail them, while any change of what the pipeline does does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines import SHIPPED_TASKS
from pipelines.compile import COMPILED_DIR, compile_task, compiled_name, pipeline_structure, structure_diff


def assert_same_pipeline(stored: Path, fresh: Path) -> None:
    """Fail with the first differing paths when `fresh` does not compile to `stored`'s pipeline."""
    want, got = pipeline_structure(stored.read_text()), pipeline_structure(fresh.read_text())
    diff = structure_diff(want, got)
    assert not diff, (f"{stored} is stale (components, factory or TrainConfig defaults changed); "
                      "run: cdseg pipeline compile --all\n" + "\n".join(diff))


@pytest.mark.parametrize(("dataset", "task"), SHIPPED_TASKS)
def test_checked_in_yaml_is_fresh(tmp_path: Path, dataset: str, task: str) -> None:
    fresh = compile_task(task, tmp_path, dataset=dataset)
    stored = COMPILED_DIR / fresh.name
    assert stored.is_file(), f"{stored} is missing; run: cdseg pipeline compile --all"
    assert_same_pipeline(stored, fresh)


def test_compiled_dir_holds_only_shipped_tasks() -> None:
    assert sorted(p.name for p in COMPILED_DIR.glob("*.yaml")) == sorted(compiled_name(t, d) for d, t in SHIPPED_TASKS)


def test_another_sdk_version_is_the_same_pipeline(tmp_path: Path) -> None:
    stored = COMPILED_DIR / "321.yaml"
    docs = list(yaml.safe_load_all(stored.read_text()))
    assert any("sdkVersion" in d for d in docs), "the compiled YAML no longer records sdkVersion: update the test"
    for doc in docs:
        if "sdkVersion" in doc:
            doc["sdkVersion"] = "kfp-2.17.99"
    bumped = tmp_path / "321.yaml"
    bumped.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    assert_same_pipeline(stored, bumped)


@pytest.mark.parametrize("mutate", ["default", "image", "task"])
def test_a_real_change_of_the_pipeline_is_caught(tmp_path: Path, mutate: str) -> None:
    stored = COMPILED_DIR / "321.yaml"
    text = stored.read_text()
    docs = list(yaml.safe_load_all(text))
    spec = docs[0]
    if mutate == "default":
        params = spec["root"]["inputDefinitions"]["parameters"]
        name = next(n for n, p in params.items() if "defaultValue" in p and isinstance(p["defaultValue"], int | float)
                    and not isinstance(p["defaultValue"], bool))
        params[name]["defaultValue"] = params[name]["defaultValue"] + 1
    elif mutate == "image":
        executor = next(iter(spec["deploymentSpec"]["executors"].values()))
        executor["container"]["image"] = "example.invalid/other:1"
    else:
        tasks = spec["root"]["dag"]["tasks"]
        tasks.pop(next(iter(tasks)))
    changed = tmp_path / "321.yaml"
    changed.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    with pytest.raises(AssertionError, match="stale"):
        assert_same_pipeline(stored, changed)


@pytest.mark.parametrize(("dataset", "task"), SHIPPED_TASKS)
def test_every_pipeline_parameter_has_a_description(dataset: str, task: str) -> None:
    # the KFP UI's run form shows these next to each field
    spec = next(yaml.safe_load_all((COMPILED_DIR / compiled_name(task, dataset)).read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    missing = sorted(name for name, p in params.items() if len(p.get("description", "").strip()) < 10)
    assert not missing, f"pipeline parameters without a description in {compiled_name(task, dataset)}: {missing}"
