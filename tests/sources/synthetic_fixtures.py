"""Writers of tiny raw datasets in the real on-disk layouts of the five synthetic sources.

Each writer follows shared/reference/synthetic_datasets.md §7 (HDF5 key "dataset", MATLAB v5
`segm_t` variables, OpenPose JSON, COCO JSON) and returns what a test needs to check the
converted values. Sizes are parameters so the benchmark can write realistic frames.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import h5py
import numpy as np
import scipy.io as sio
from PIL import Image

from pipeline.sources.hypersim import STANDARD_M_CAM_FROM_UV
from pipeline.video import ffmpeg_exe

SPLIT_HEADER = (
    "scene_name",
    "camera_name",
    "frame_id",
    "included_in_public_release",
    "exclude_reason",
    "split_partition_name",
)


def write_video(path: Path, frames: np.ndarray, fps: float = 30.0, codec: str = "libx264") -> Path:
    """uint8 `[T,H,W,3]` -> a video file, lossless-ish (high quality) so tests can check colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    quality = ["-qp", "0", "-pix_fmt", "yuv444p"] if codec == "libx264" else ["-q:v", "2"]
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", str(fps), "-i", "pipe:", "-c:v", codec, *quality, str(path)]  # fmt: skip
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True)
    return path


# ----------------------------------------------------------------------------- hypersim


def write_hdf5(path: Path, array: np.ndarray, compression: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("dataset", data=array, compression="gzip", compression_opts=compression)


def write_hypersim_frame(
    root: Path,
    scene: str,
    cam: str,
    frame: int,
    height: int = 6,
    width: int = 8,
    seed: int = 0,
    compression: int = 1,
    distance: np.ndarray | None = None,
    color: np.ndarray | None = None,
    normal: np.ndarray | None = None,
    semantic: np.ndarray | None = None,
) -> dict[str, Path]:
    """One frame's color/depth_meters/normal_cam/semantic/render_entity_id HDF5 files."""
    rng = np.random.default_rng(seed + frame)
    shape = (height, width)
    invalid = np.zeros(shape, bool)
    invalid[0, 0] = True  # one empty pixel, as where a Hypersim ray hits nothing
    if distance is None:
        distance = rng.uniform(1, 10, shape).astype(np.float16)
        distance[invalid] = np.nan
    if normal is None:
        normal = rng.normal(size=(*shape, 3))
        normal = (normal / np.linalg.norm(normal, axis=2, keepdims=True)).astype(np.float16)
        normal[invalid] = np.nan
    if semantic is None:
        semantic = rng.integers(1, 41, shape).astype(np.int16)
        semantic[invalid] = -1
    if color is None:
        color = rng.uniform(0, 3, (*shape, 3)).astype(np.float16)
    entity = np.where(invalid, -1, 7).astype(np.int16)
    images = root / scene / "images"
    stem = f"frame.{frame:04d}"
    geometry = images / f"scene_{cam}_geometry_hdf5"
    files = {
        "color": images / f"scene_{cam}_final_hdf5" / f"{stem}.color.hdf5",
        "depth": geometry / f"{stem}.depth_meters.hdf5",
        "normal": geometry / f"{stem}.normal_cam.hdf5",
        "semantic": geometry / f"{stem}.semantic.hdf5",
        "entity": geometry / f"{stem}.render_entity_id.hdf5",
    }
    for name, array in (
        ("color", color),
        ("depth", distance),
        ("normal", normal),
        ("semantic", semantic),
        ("entity", entity),
    ):
        write_hdf5(files[name], array, compression)
    return files


def write_hypersim_split(
    root: Path, rows: list[tuple[str, str, int, str]], excluded: int = 0, cameras: bool = True
) -> Path:
    """The official split CSV: (scene, cam, frame, split) rows, plus `excluded` non-public rows.

    `cameras`: also put `metadata_camera_parameters.csv` (from ml-hypersim's contrib/mikeroberts3000/,
    not in the scene downloads) beside it, with the standard camera for every scene listed.
    """
    if cameras:
        write_hypersim_cameras(root, {scene: STANDARD_M_CAM_FROM_UV for scene, _, _, _ in rows})
    path = root / "metadata_images_split_scene_v1.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SPLIT_HEADER)
        for scene, cam, frame, split in rows:
            writer.writerow([scene, cam, frame, "True", "", split])
        for k in range(excluded):
            writer.writerow(["ai_999_999", "cam_00", k, "False", "OUTSIDE VIEWING AREA (BAD TRAJECTORY)", ""])
    return path


def write_hypersim_cameras(root: Path, matrices: dict[str, np.ndarray]) -> Path:
    """metadata_camera_parameters.csv with M_cam_from_uv per scene (other columns left out)."""
    path = root / "metadata_camera_parameters.csv"
    names = [f"M_cam_from_uv_{i}{j}" for i in range(3) for j in range(3)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["scene_name", "settings_output_img_height", "settings_output_img_width", *names])
        for scene, m in matrices.items():
            writer.writerow([scene, 768.0, 1024.0, *np.asarray(m, float).ravel().tolist()])
    return path


def write_hypersim(
    root: Path,
    trajectories: dict[tuple[str, str], tuple[str, int]],
    height: int = 6,
    width: int = 8,
    compression: int = 1,
) -> Path:
    """Trajectories {(scene, cam): (split, n_frames)} with random content + the split CSV."""
    rows = []
    for (scene, cam), (split, count) in trajectories.items():
        for frame in range(count):
            write_hypersim_frame(root, scene, cam, frame, height, width, compression=compression)
            rows.append((scene, cam, frame, split))
    write_hypersim_split(root, rows, excluded=2)
    return root


# ----------------------------------------------------------------------------- surreact


def surreact_frames(t: int, height: int, width: int) -> np.ndarray:
    """Frames whose flat grey level encodes the frame number (10 * t), so selection is checkable."""
    return np.stack([np.full((height, width, 3), (10 * k + 5) % 256, np.uint8) for k in range(t)])


def write_surreact_clip(
    root: Path,
    split: str = "train",
    seq: str = "S001C001P001R001A001",
    view: int = 0,
    t: int = 5,
    height: int = 24,
    width: int = 32,
    joints3d: np.ndarray | None = None,
    joints2d: np.ndarray | None = None,
    cam_dist: float = 5.0,
    cam_height: float = 1.0,
    depth: bool = False,
    segm_frames: int | None = None,
    segm_value: int = 3,
    video_frames: np.ndarray | None = None,
) -> Path:
    """One clip: `<seq>/<seq>_v%03d_r00.mp4` + `_info.mat` + `_segm.mat` (+ `_depth.mat`). Returns the stem.

    NTU sequences are `S001C001P001R001A001`; UESTC ones keep their source video's extension,
    `seq="a0_d1_p001_c1_color.avi"` (SURREACT's datageneration/vidlists/uestc/).
    """
    folder = root / split / seq
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{seq}_v{view:03d}_r00"
    if joints3d is None:
        joints3d = np.zeros((3, 24, t), np.float32)
        joints3d[2] = 1.0  # every joint at the camera's aim point
    info = dict(
        bg="bg.jpg",
        cloth=["cloth.jpg"],
        gender=np.uint8(0),
        joints3D=joints3d.astype(np.float32),
        pose=np.zeros((72, t), np.float32),
        shape=np.zeros(10, np.float32),
        sequence=seq,
        source="ntu",
        zrot_euler=np.float32(view),
        light=np.zeros(9, np.float32),
        cam_height=np.float32(cam_height),
        cam_dist=np.float32(cam_dist),
    )
    if joints2d is not None:
        info["joints2D"] = joints2d.astype(np.float32)
    sio.savemat(f"{stem}_info.mat", info, do_compression=True)
    segm = {}
    for k in range(t if segm_frames is None else segm_frames):
        part = np.zeros((height, width), np.uint8)
        part[height // 2 :, :] = segm_value  # lower half one body part, upper half background
        segm[f"segm_{k + 1}"] = part
    sio.savemat(f"{stem}_segm.mat", segm, do_compression=True)
    if depth:
        planes = {}
        for k in range(t):
            d = np.full((height, width), 2.0 + k, np.float32)
            d[0, :] = 1e10  # background: Blender's "infinite" depth
            planes[f"depth_{k + 1}"] = d
        sio.savemat(f"{stem}_depth.mat", planes, do_compression=True)
    frames = surreact_frames(t, height, width) if video_frames is None else video_frames
    write_video(Path(f"{stem}.mp4"), frames, fps=30.0)  # appended: a UESTC sequence name holds ".avi"
    return stem


# ----------------------------------------------------------------------------- kist-synadl


def write_synadl_clip(
    root: Path,
    name: str = "A023_P102_G003_C021",
    t: int = 4,
    height: int = 36,
    width: int = 64,
    joints_cm: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    video_frames: int | None = None,
    data: list | None = None,
    first_index: int = 0,
) -> tuple[Path, Path]:
    """RGB/<name>.avi + Openpose/{2DJ,3DJ}/<name>.json. `joints_cm` is `[T,25,3]` BODY_25, y up.

    `first_index` is the `frame_index` of the first frame: 0, or 1 as in ST-GCN's Kinetics-skeleton
    JSON, whose style the files follow (which one KIST uses is undocumented).
    """
    if joints_cm is None:
        joints_cm = np.tile((np.arange(25 * 3, dtype=float).reshape(25, 3) + 100.0)[None], (t, 1, 1))
    if scores is None:
        scores = np.ones((t, 25))
    if data is None:
        skeleton = [{"pose": joints_cm[k].ravel().tolist(), "score": scores[k].tolist()} for k in range(t)]
        data = [{"frame_index": k + first_index, "skeleton": [skeleton[k]]} for k in range(t)]
    paths = []
    for sub, dims in (("2DJ", 2), ("3DJ", 3)):
        folder = root / "Openpose" / sub
        folder.mkdir(parents=True, exist_ok=True)
        flat = [{"pose": [0.0] * 50, "score": [1.0] * 25}]
        entries = data if dims == 3 else [{"frame_index": e["frame_index"], "skeleton": flat} for e in data]
        path = folder / f"{name}.json"
        path.write_text(json.dumps({"data": entries}))
        paths.append(path)
    frames = surreact_frames(t if video_frames is None else video_frames, height, width)
    video = write_video(root / "RGB" / f"{name}.avi", frames, fps=20.0, codec="mpeg4")
    return paths[1], video


# ----------------------------------------------------------------------------- ehoi

EHOI_CATEGORIES = (
    "power supply",
    "oscilloscope",
    "welder station",
    "electric screwdriver",
    "screwdriver,",
    "pliers",
    "welder probe tip",
    "oscilloscope probe tip",
    "low voltage board",
    "high voltage board",
    "register",
    "electric screwdriver battery",
    "working area",
    "welder base",
    "socket",
    "left red button",
    "left green button",
    "right red button",
    "right green button",
    "hand",
)  # as in EgoISM-HOI data/ref_enigma.json, stray comma included; ids 0-based


def ehoi_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def rect_polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def write_ehoi(
    root: Path,
    split: str = "train",
    images: list[dict] | None = None,
    height: int = 20,
    width: int = 40,
    with_annotations_key: bool = True,
) -> Path:
    """annotations/<split>_coco.json + images/camera_<id>.jpg (PNG content; lossless for colour checks).

    `images` entries: {"id", "anns": [{"category_id", "bbox", "segmentation"?, ...}], "size"?: (h, w)}.
    """
    if images is None:
        hand = {
            "category_id": 19,
            "bbox": [2, 4, 10, 8],
            "segmentation": rect_polygon(2, 4, 10, 8),
            "hand_side": 1,
            "contact_state": 1,
        }
        pliers = {"category_id": 5, "bbox": [20, 0, 10, 10], "segmentation": rect_polygon(20, 0, 10, 10)}
        images = [{"id": 1, "anns": [hand, pliers]}]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i, "name": n} for i, n in enumerate(EHOI_CATEGORIES)]
    coco = {"images": [], "annotations": [], "categories": categories}
    ann_id = 0
    for image in images:
        h, w = image.get("size", (height, width))
        name = f"camera_{image['id']}.jpg"
        Image.fromarray(ehoi_image(h, w, image["id"])).save(root / "images" / name, format="PNG")
        coco["images"].append({"id": image["id"], "file_name": name, "width": w, "height": h})
        for ann in image["anns"]:
            ann_id += 1
            x, y, bw, bh = ann["bbox"]
            coco["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image["id"],
                    "area": bw * bh,
                    "iscrowd": 0,
                    "segmentation": [],
                    **ann,
                }
            )
    if not with_annotations_key:
        del coco["annotations"]
    path = root / "annotations" / f"{split}_coco.json"
    path.write_text(json.dumps(coco))
    return path


# ----------------------------------------------------------------------------- phav (guessed format)

PHAV_COLOURS = {
    "Sky": (90, 200, 255),
    "Road": (100, 60, 100),
    "Human": (255, 0, 0),
    "Car:0": (200, 200, 0),
    "Spaceship": (1, 2, 3),
}  # Spaceship: a class the unified space does not know


def write_phav_video(
    root: Path,
    video: str = "kick_ball_001",
    t: int = 3,
    height: int = 12,
    width: int = 16,
    rgb_as_video: bool = False,
    depth_frames: int | None = None,
    depth_8bit: bool = False,
) -> dict[str, Path]:
    """rgb/<video>/ (or rgb/<video>.mp4), depth/<video>/%05d.png (uint16 cm), semseg/<video>/%05d.png (RGB)
    and semseg_colors.txt. Depth of frame k is (100 + 50 k) cm with row 0 at 65535 (invalid); the
    segmentation is Sky above, Road below, a Human block and one unknown-colour pixel."""
    frames = surreact_frames(t, height, width)
    paths = {"rgb": root / "rgb" / video, "depth": root / "depth" / video, "segm": root / "semseg" / video}
    for folder in paths.values():
        folder.mkdir(parents=True, exist_ok=True)
    if rgb_as_video:
        paths["rgb"].rmdir()
        paths["rgb"] = write_video(root / "rgb" / f"{video}.mp4", frames, fps=30.0)
    for k in range(t):
        if not rgb_as_video:
            Image.fromarray(frames[k]).save(paths["rgb"] / f"{k:05d}.png")
        segm = np.zeros((height, width, 3), np.uint8)
        segm[: height // 2] = PHAV_COLOURS["Sky"]
        segm[height // 2 :] = PHAV_COLOURS["Road"]
        segm[2:5, 2:5] = PHAV_COLOURS["Human"]
        segm[-1, -1] = (7, 7, 7)  # not in the table
        Image.fromarray(segm).save(paths["segm"] / f"{k:05d}.png")
    for k in range(t if depth_frames is None else depth_frames):
        depth = np.full((height, width), 100 + 50 * k, np.uint16)
        depth[0] = 65535
        image = Image.fromarray(depth.astype(np.uint8)) if depth_8bit else Image.fromarray(depth)
        image.save(paths["depth"] / f"{k:05d}.png")
    lines = ["Category r g b"] + [f"{name} {r} {g} {b}" for name, (r, g, b) in PHAV_COLOURS.items()]
    (root / "semseg_colors.txt").write_text("\n".join(lines) + "\n")
    return paths
