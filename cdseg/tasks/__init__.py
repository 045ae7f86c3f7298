"""Incremental tasks: steps of classes, heads, label mapping per split, and per-step patch selection.

Tasks never import `cdseg.data`: classes and shipped tasks come from the prepared dataset's manifest.
"""

from cdseg.tasks.task import SPLITS, Task, get_task, load_task_file, task_names

__all__ = ["SPLITS", "Task", "get_task", "load_task_file", "task_names"]
