"""Task definitions, heads, output names and label mapping, pinned for every shipped task."""

from __future__ import annotations

import numpy as np
import pytest

from cdseg.data.isprs import CLASSES, POTSDAM
from cdseg.errors import ConfigError, UserError
from cdseg.tasks import Task
from cdseg.tasks import get_task as task_of
from cdseg.tasks.config import TaskConfig

#: what a prepared ISPRS dataset's manifest says of its classes and tasks
ISPRS = POTSDAM.manifest_fields()
SHIPPED = ISPRS["tasks"]


def get_task(name: str) -> Task:
    return task_of(name, ISPRS)

IMP, BLD, LOW, TREE, CAR, CLU = range(6)


def raw_lut(task: str, step: int, split: str) -> list[int]:
    """LUT entries for raw classes 0..5 and the ignore label."""
    lut = get_task(task).label_lut(step, split)
    return [int(v) for v in lut[:6]] + [int(lut[255])]


def test_shipped_tasks_are_the_originals():
    assert get_task("offline").steps == (tuple(CLASSES),)
    assert [[CLASSES.index(c) for c in s] for s in get_task("222a").steps] == [[0, 2], [1, 3], [4, 5]]
    assert [[CLASSES.index(c) for c in s] for s in get_task("321").steps] == [[1, 3, 5], [0, 2], [4]]
    assert [[CLASSES.index(c) for c in s] for s in get_task("6s").steps] == [[1], [3], [0], [2], [4], [5]]
    assert set(SHIPPED) == {"offline", "6s", "222a", "321"}


@pytest.mark.parametrize(("task", "order"), [
    ("6s", ["building", "tree", "impervious_surfaces", "low_vegetation", "car", "clutter"]),
    ("222a", ["impervious_surfaces", "low_vegetation", "building", "tree", "car", "clutter"]),
    ("321", ["building", "tree", "clutter", "impervious_surfaces", "low_vegetation", "car"]),
    ("offline", list(CLASSES)),
])
def test_output_order_is_task_order(task, order):
    t = get_task(task)
    last = t.num_steps - 1
    assert t.class_names(last) == ["background", *order]
    assert t.num_outputs(last) == 7


def test_heads():
    assert get_task("222a").heads(0) == [3]
    assert get_task("222a").heads(2) == [3, 2, 2]
    assert get_task("6s").heads(5) == [2, 1, 1, 1, 1, 1]
    assert get_task("321").heads(1) == [4, 2]
    assert get_task("offline").heads(0) == [7]


def test_222a_step1_worked_example():
    # seed-spec 3.4: label2index {imp:1, low_veg:2, building:3, tree:4}; train keeps only the new classes.
    assert raw_lut("222a", 1, "train") == [0, 3, 0, 4, 0, 0, 255]
    # validation (bug 2 fixed) and test: old and new classes keep their index, future -> background.
    assert raw_lut("222a", 1, "val") == [1, 3, 2, 4, 0, 0, 255]
    assert raw_lut("222a", 1, "test") == [1, 3, 2, 4, 0, 0, 255]


@pytest.mark.parametrize(("task", "step", "train", "test"), [
    ("6s", 0, [0, 1, 0, 0, 0, 0, 255], [0, 1, 0, 0, 0, 0, 255]),
    ("6s", 2, [3, 0, 0, 0, 0, 0, 255], [3, 1, 0, 2, 0, 0, 255]),
    ("6s", 5, [0, 0, 0, 0, 0, 6, 255], [3, 1, 4, 2, 5, 6, 255]),
    ("222a", 0, [1, 0, 2, 0, 0, 0, 255], [1, 0, 2, 0, 0, 0, 255]),
    ("222a", 2, [0, 0, 0, 0, 5, 6, 255], [1, 3, 2, 4, 5, 6, 255]),
    ("321", 0, [0, 1, 0, 2, 0, 3, 255], [0, 1, 0, 2, 0, 3, 255]),
    ("321", 1, [4, 0, 5, 0, 0, 0, 255], [4, 1, 5, 2, 0, 3, 255]),
    ("321", 2, [0, 0, 0, 0, 6, 0, 255], [4, 1, 5, 2, 6, 3, 255]),
    ("offline", 0, [1, 2, 3, 4, 5, 6, 255], [1, 2, 3, 4, 5, 6, 255]),
])
def test_luts(task, step, train, test):
    assert raw_lut(task, step, "train") == train
    assert raw_lut(task, step, "test") == test
    assert raw_lut(task, step, "val") == test


def test_lut_is_256_uint8_and_unused_values_map_to_zero():
    lut = get_task("6s").label_lut(3, "train")
    assert lut.shape == (256,) and lut.dtype == np.uint8
    assert (lut[6:255] == 0).all()


def test_old_new_seen():
    t = get_task("321")
    assert t.old_classes(0) == []
    assert t.new_classes(1) == ["impervious_surfaces", "low_vegetation"]
    assert t.old_classes(2) == ["building", "tree", "clutter", "impervious_surfaces", "low_vegetation"]
    assert t.future_classes(1) == ["car"]


@pytest.mark.parametrize("step", [-1, 3, 10])
def test_step_out_of_range(step):
    with pytest.raises(ConfigError, match=r"out of range.*0\.\.2"):
        get_task("222a").label_lut(step, "train")


def test_unknown_task_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown task .bogus.; use one of the tasks of dataset 'potsdam': offline, "
                                          "222a, 321, 6s, or the path"):
        get_task("bogus")


def test_task_config_resolves_against_the_dataset():
    assert TaskConfig(name="6s", step=5).task(ISPRS).num_steps == 6
    with pytest.raises(ConfigError, match="out of range"):
        TaskConfig(name="6s", step=6).task(ISPRS)
    with pytest.raises(ConfigError, match="unknown task"):
        TaskConfig(name="7s").task(ISPRS)
    with pytest.raises(ValueError, match="must be >= 0"):
        TaskConfig(name="6s", step=-1)


def test_tasks_come_from_the_manifest_not_a_fixed_class_list():
    fields = {"dataset": "x", "classes": ["bg", "a", "b", "c"], "background": "bg",
              "tasks": {"2-1": [["bg", "a", "b"], ["c"]]}}
    t = task_of("2-1", fields)
    assert t.heads(1) == [3, 1] and t.class_names(1) == ["bg", "a", "b", "c"]
    assert [int(v) for v in t.label_lut(1, "train")[:4]] == [0, 0, 0, 3]
    assert [int(v) for v in t.label_lut(1, "test")[:4]] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="background class 'bg' is in step 1"):
        task_of("late", {**fields, "tasks": {"late": [["a"], ["bg"]]}})


def test_yaml_task(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nsteps:\n  - [building, tree]\n  - [car]\n")
    t = get_task(str(path))
    assert t.name == "mine" and t.heads(1) == [3, 1]
    assert raw_lut(str(path), 1, "train") == [0, 0, 0, 0, 3, 0, 255]
    # classes in no step are always background
    assert raw_lut(str(path), 1, "test") == [0, 1, 0, 2, 3, 0, 255]


@pytest.mark.parametrize(("body", "match"), [
    ("steps: [[building], [trees]]", "unknown class 'trees'; valid names are: impervious_surfaces, building"),
    ("steps: [[building], [building, car]]", "'building' appears more than once"),
    ("steps: [[building], []]", "step 1 is empty"),
    ("steps: []", "non-empty list"),
    ("colour: red\nsteps: [[car]]", "unknown key"),
])
def test_yaml_task_errors_are_one_line(tmp_path, body, match):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(UserError, match=match) as info:
        get_task(str(path))
    assert "\n" not in str(info.value)
