"""`ehoi`: synthetic egocentric hand-object interactions (Leonardi et al., ICIAP 2022; EgoISM-HOI).

Raw layout under `--root` (egoism-hoi-dataset/ as unzipped):

    annotations/train_coco.json, val_coco.json, r_test_coco.json     COCO instances (pycocotools)
    images/<file_name>                                               RGB frames
    depth_maps/map_<id>.png                                          8-bit relative depth (not used)

Each image becomes a static clip (the frame repeated `--frames` times, `padded_frames` = T-1).
Labels: 2D boxes (COCO xywh pixels -> xyxy normalised to the image; hands first, then objects in
annotation order, so the box slots keep the hands when an image has more boxes than slots; class
ids in `manifests/labelspaces/ehoi_boxes.yaml`) and a semantic map rasterised from the instance
masks into the unified label space: pixels outside every instance are `background`, larger
instances are painted first and hands last, and the box of an instance without a mask is
`ignore` where no mask covers it. Category names are matched after lower-casing and dropping
the trailing comma the official file has on "screwdriver,". The 8-bit depth is relative
(inverse-depth-like, no metric scale), so it does not become `depth.npy`.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pipeline.labelspace import IGNORE, load_label_space, source_mapping
from pipeline.sources._synthetic_common import require_files, sample_frames
from pipeline.sources.base import (
    Item,
    Option,
    Quarantine,
    Sample,
    SamplingRule,
    Source,
    SourceError,
    file_fingerprint,
    leaves_root,
    value_fingerprint,
)

BOX_SPACE = "ehoi_boxes"
SEGM_SPACE = "unified"
ANNOTATION_FILES = {"train": "train_coco.json", "val": "val_coco.json", "test": "r_test_coco.json"}
HAND = "hand"


def normalise_category(name: str) -> str:
    """'Screwdriver,' -> 'screwdriver': the official category list has a stray trailing comma."""
    return name.strip().rstrip(",").strip().lower()


def xywh_to_unit_xyxy(bbox: list[float], width: int, height: int) -> list[float] | None:
    """COCO [x, y, w, h] in pixels -> [x1, y1, x2, y2] in [0, 1]; None for an empty box."""
    x, y, w, h = (float(v) for v in bbox)
    x1, x2 = np.clip([x / width, (x + w) / width], 0.0, 1.0)
    y1, y2 = np.clip([y / height, (y + h) / height], 0.0, 1.0)
    if not (x2 > x1 and y2 > y1):
        return None
    return [float(x1), float(y1), float(x2), float(y2)]


def rasterise(segmentation: object, height: int, width: int) -> np.ndarray | None:
    """A COCO segmentation (polygons or RLE) -> bool mask `[H,W]`; None when it is empty."""
    if not segmentation:
        return None
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]  # a polygon needs three points
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)  # uncompressed RLE
    else:
        rle = segmentation
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword deprecation, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


class EhoiSource(Source):
    name = "ehoi"
    sampling = SamplingRule(
        "a still image repeated --frames times", frozenset()
    )  # every view would be the same
    version = "1"
    tasks = ("segm", "boxes")
    splits = ("train", "val")
    description = (
        "EHOI / EgoISM-HOI egocentric images (COCO JSON): hand+object boxes, segm; a static clip per image"
    )
    options = tuple(
        Option(f"ehoi_{split}_json", "str", name, f"the {split} COCO file under annotations/")
        for split, name in ANNOTATION_FILES.items()
    )

    @cached_property
    def _categories(self) -> tuple[dict[str, int], dict[str, int]]:
        """(normalised name -> box class id, normalised name -> unified segm id)."""
        boxes = {name: i for i, name in enumerate(load_label_space(BOX_SPACE).classes)}
        return boxes, {k: v for k, v in source_mapping("ehoi").items() if isinstance(k, str)}

    def _annotation_file(self, split: str) -> Path:
        path = self.root_dir / "annotations" / self.option(f"ehoi_{split}_json")
        if not path.is_file():
            raise SourceError(f"ehoi: annotation file {path} not found")
        return path

    def items(self, split: str) -> Iterator[Item]:
        path = self._annotation_file(split)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            try:
                coco = COCO(str(path))
            except (ValueError, TypeError, KeyError, AssertionError) as error:
                raise SourceError(f"ehoi: {path.name} is not a COCO instances file ({error})") from None
        names = {c["id"]: normalise_category(c["name"]) for c in coco.dataset.get("categories", [])}
        images_dir = self.root_dir / "images"
        for image_id in sorted(coco.imgs):
            image = coco.imgs[image_id]
            anns = [self._annotation(a, names) for a in coco.imgToAnns.get(image_id, [])]
            file = images_dir / image["file_name"]
            if not file.is_file() and (images_dir / Path(image["file_name"]).name).is_file():
                file = images_dir / Path(image["file_name"]).name
            payload = {
                "file": str(file),
                "width": image.get("width"),
                "height": image.get("height"),
                "anns": anns,
            }
            yield Item(
                id=Path(image["file_name"]).stem,
                split=split,
                fingerprint=value_fingerprint(file_fingerprint(file), payload),
                payload=payload,
            )

    @staticmethod
    def _annotation(ann: dict, names: dict[int, str]) -> dict:
        keep = ("bbox", "segmentation", "area", "hand_side", "contact_state")
        category = ann.get("category_id", -1)  # -1: no category id, named "id -1" like any unknown one
        return {"category": names.get(category, f"id {category}"), **{k: ann[k] for k in keep if k in ann}}

    def load(self, item: Item) -> Sample:
        file = Path(item.payload["file"])
        if leaves_root(self.root_dir, file):
            raise Quarantine(f"image path {file} leaves --root {self.root}")
        require_files(file)
        anns = item.payload["anns"]
        if not anns:
            raise Quarantine(f"{file.name}: no annotations")
        try:
            with Image.open(file) as image:
                frame = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            raise Quarantine(f"{file.name}: unreadable image ({type(error).__name__})") from None
        height, width = frame.shape[:2]
        declared = (item.payload["height"], item.payload["width"])
        if None not in declared and declared != (height, width):
            raise Quarantine(
                f"{file.name}: image is {width}x{height}, the JSON says {declared[1]}x{declared[0]}"
            )
        box_ids, segm_ids = self._categories
        unknown = sorted({a["category"] for a in anns if a["category"] not in box_ids})
        if unknown:
            raise Quarantine(
                f"{file.name}: unknown categor{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}"
            )
        boxes, classes, hands = self._boxes(anns, box_ids, width, height)
        segm = self._segm(anns, segm_ids, height, width)
        chosen, padded = sample_frames(1, self.config)
        frames = len(chosen)
        return Sample(
            video=np.repeat(frame[None], frames, axis=0),
            fps=1.0,  # a still image
            frame_indices=chosen,
            labels={
                "segm.npy": np.repeat(segm[None], frames, axis=0),
                "boxes.npy": np.repeat(boxes[None], frames, axis=0),
                "boxes_cls.npy": np.repeat(classes[None], frames, axis=0),
            },
            extra={
                "segm_space": SEGM_SPACE,
                "box_space": BOX_SPACE,
                "padded_frames": padded,
                "static": True,
                "hands": hands,
            },
        )

    @staticmethod
    def _boxes(
        anns: list[dict], box_ids: dict[str, int], width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Boxes `[N,4]`, classes `[N]` (hands first) and each hand's side/contact, in box order."""
        ordered = [a for a in anns if a["category"] == HAND] + [a for a in anns if a["category"] != HAND]
        boxes, classes, hands = [], [], []
        for ann in ordered:
            box = xywh_to_unit_xyxy(ann.get("bbox", [0, 0, 0, 0]), width, height)
            if box is None:
                continue
            boxes.append(box)
            classes.append(box_ids[ann["category"]])
            if ann["category"] == HAND:
                hands.append({"side": ann.get("hand_side"), "contact": ann.get("contact_state")})
        return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int16), hands

    @staticmethod
    def _segm(anns: list[dict], segm_ids: dict[str, int], height: int, width: int) -> np.ndarray:
        """Semantic map: background, mask-less instances' boxes ignored, masks large to small, hands last."""
        segm = np.full((height, width), segm_ids["__none__"], dtype=np.uint16)
        masked = []
        for ann in anns:
            try:
                mask = rasterise(ann.get("segmentation"), height, width)
            except (TypeError, ValueError, KeyError) as error:
                raise Quarantine(f"malformed segmentation ({type(error).__name__})") from None
            if mask is None:
                x, y, w, h = (int(round(float(v))) for v in ann.get("bbox", [0, 0, 0, 0]))
                segm[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = IGNORE
            else:
                masked.append((ann["category"] == HAND, -int(mask.sum()), mask, segm_ids[ann["category"]]))
        for _, _, mask, class_id in sorted(masked, key=lambda m: (m[0], m[1])):
            segm[mask] = class_id
        return segm
