"""Incremental tasks: steps of classes, heads, label mapping per split, and per-step patch selection."""

from cdseg.tasks.task import SHIPPED, SPLITS, Task, get_task, load_task_file

__all__ = ["SHIPPED", "SPLITS", "Task", "get_task", "load_task_file"]
