"""Task names and their bit order, mirrored by name from ``pipeline.schema`` (which must stay torch-free).

Column ``i`` of the trainer's ``mask`` tensor ``[B, len(TASKS)]`` is the availability of ``TASKS[i]``.
"""

from __future__ import annotations

TASKS: tuple[str, ...] = ("action", "depth", "normal", "segm", "pose3d", "boxes")
SYNTHETIC_TASKS: tuple[str, ...] = TASKS[1:]
DENSE_TASKS: tuple[str, ...] = ("depth", "normal", "segm")
TOKEN_TASKS: tuple[str, ...] = ("pose3d", "boxes")
TASK_INDEX: dict[str, int] = {name: i for i, name in enumerate(TASKS)}

SEGM_IGNORE: int = 65535  # segm label meaning "no label for this pixel"
NUM_JOINTS: int = 25  # Kinect V2 joint order
