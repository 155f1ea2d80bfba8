"""Tasks: what a model's output means and how it is scored. A new task (image-to-image) is one module
here, registered in TASKS; evaluation streams batches into the task's scorer and never looks inside."""
from __future__ import annotations

from ..registry import lookup
from .base import QuantCheck, Scorer, Task
from .classification import ClassificationTask, Metrics
from .image import ImageMetrics, ImageToImageTask

TASKS: dict[str, type[Task]] = {ClassificationTask.name: ClassificationTask, ImageToImageTask.name: ImageToImageTask}
DEFAULT_TASK = ClassificationTask.name


def get_task(name: str = DEFAULT_TASK) -> Task:
    return lookup(TASKS, name, "task")


__all__ = ["DEFAULT_TASK", "TASKS", "ImageMetrics", "Metrics", "QuantCheck", "Scorer", "Task", "get_task"]
