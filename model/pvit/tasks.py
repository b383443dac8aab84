"""Task names and their bit order, mirrored by name from ``pipeline.schema`` (which must stay torch-free).

Column ``i`` of the trainer's ``mask`` tensor ``[B, len(TASKS)]`` is the availability of ``TASKS[i]``.
"""

from __future__ import annotations

TASKS: tuple[str, ...] = ("action", "depth", "normal", "segm", "pose3d", "boxes", "oscc", "pnr", "ava")
SYNTHETIC_TASKS: tuple[str, ...] = TASKS[1:6]
DOWNSTREAM_TASKS: tuple[str, ...] = ("oscc", "pnr", "ava")  # real-data heads besides action, opt-in per model
DENSE_TASKS: tuple[str, ...] = ("depth", "normal", "segm")
TOKEN_TASKS: tuple[str, ...] = ("pose3d", "boxes")
TASK_INDEX: dict[str, int] = {name: i for i, name in enumerate(TASKS)}

SEGM_IGNORE: int = 65535  # segm label meaning "no label for this pixel"
NUM_JOINTS: int = 25  # Kinect V2 joint order
NUM_AVA_CLASSES: int = 60  # the AVA v2.2 evaluation subset (ava_action_list_v2.2_for_activitynet_2019.pbtxt)
