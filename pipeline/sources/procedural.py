"""`procedural`: small synthetic scenes rendered in numpy, with exact labels for every task.

Each clip is a ground plane, a few spheres and boxes and an articulated stick figure carrying the
25 Kinect V2 joints, seen by a pinhole camera, ray cast analytically. Every sample carries depth,
normals, segmentation, 3D pose and 2D boxes, all exact, and an action label: one of ten motion
classes (an object slides, rises, falls, approaches or recedes; the camera orbits; the person
raises the arms or squats). So the whole product runs on a fresh machine with no download: the
action label stands in for real data, the scene labels for synthetic data.

Everything is a function of (`--seed`, split, clip index), so builds are deterministic and
`--num-samples` only adds or removes clips at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.config import BuildConfig
from pipeline.geometry import FULL, Window, label_hw
from pipeline.schema import KINECT_BONES, KINECT_JOINTS
from pipeline.sources.base import Item, Option, Sample, SamplingRule, Source, sampling_rng, value_fingerprint

ACTIONS: tuple[str, ...] = (
    "slide left", "slide right", "rise", "fall", "approach", "recede",
    "orbit left", "orbit right", "raise arms", "squat",
)  # fmt: skip
SEGM_SPACE = "procedural"
SKY, GROUND, SPHERE, BOX, PERSON = range(5)  # class ids of manifests/labelspaces/procedural.yaml
DEFAULT_TRAIN_SAMPLES = 200
FPS = 15.0
FOCAL = 1.1  # focal length in units of the image width (about 49 degrees horizontal field of view)
LIGHT = np.array([0.4, 1.0, -0.3]) / np.linalg.norm([0.4, 1.0, -0.3])
RENDERER_VERSION = "4"  # 3: any aspect ratio, frame times at segment centres (or random: train views);
#                         4: the mover is larger and near the scene centre
FAR = 100.0  # metres: the ground beyond is sky (and float16 depth stays finite)
LOOK_AT = np.array([0.0, 0.6, 0.0])  # every camera looks at this point above the scene centre

# Bones of the stick figure: the Kinect skeleton without the hand tips and thumbs it does not model.
BONES: tuple[tuple[str, str], ...] = tuple(
    bone for bone in KINECT_BONES if not bone[1].startswith(("handtip", "thumb"))
)
JOINT = {name: i for i, name in enumerate(KINECT_JOINTS)}


# ----------------------------------------------------------------------------- scene description


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: world->camera rotation (OpenCV axes: x right, y down, z forward)."""

    position: np.ndarray  # (3,) world
    rotation: np.ndarray  # (3, 3) world -> camera

    @staticmethod
    def looking_at(position: np.ndarray, target: np.ndarray) -> Camera:
        forward = target - position
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 1.0, 0.0])  # world y is up
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return Camera(position, np.stack([right, down, forward]))

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (points - self.position) @ self.rotation.T


@dataclass(frozen=True)
class Sphere:
    centre: np.ndarray
    radius: float
    colour: np.ndarray
    segm: int
    instance: int


@dataclass(frozen=True)
class Box:
    centre: np.ndarray
    half: np.ndarray  # half extents along the box's own axes
    yaw: float  # rotation about world y
    colour: np.ndarray
    segm: int
    instance: int


def skeleton(base: np.ndarray, facing: float, arms: float, squat: float) -> np.ndarray:
    """World positions `[25, 3]` of the Kinect V2 joints of a standing figure.

    `arms` in [0, 1] lifts both arms sideways from hanging (0) to overhead (1); `squat` in [0, 1]
    lowers the hips, bending the knees forward. The figure's own +x is its left side.
    """
    hip = 0.95 - 0.35 * squat
    local = np.zeros((25, 3))

    def put(name: str, xyz: tuple[float, float, float] | np.ndarray) -> None:
        local[JOINT[name]] = xyz

    put("spine_base", (0, hip, 0))
    put("spine_mid", (0, hip + 0.25, 0))
    put("spine_shoulder", (0, hip + 0.5, 0))
    put("neck", (0, hip + 0.58, 0))
    put("head", (0, hip + 0.72, 0))
    angle = arms * np.pi
    for side, sign in (("left", 1.0), ("right", -1.0)):
        shoulder = np.array([0.2 * sign, hip + 0.48, 0.0])
        along = np.array([np.sin(angle) * sign, -np.cos(angle), 0.0])
        put(f"shoulder_{side}", shoulder)
        put(f"elbow_{side}", shoulder + 0.3 * along)
        put(f"wrist_{side}", shoulder + 0.57 * along)
        put(f"hand_{side}", shoulder + 0.65 * along)
        put(f"handtip_{side}", shoulder + 0.71 * along)
        put(f"thumb_{side}", shoulder + 0.62 * along + np.array([0.0, 0.0, 0.05]))
        hip_joint = np.array([0.1 * sign, hip, 0.0])
        ankle = np.array([0.1 * sign, 0.08, 0.0])
        half_reach = (hip - 0.08) / 2
        knee_forward = np.sqrt(max(0.45**2 - half_reach**2, 0.0))
        put(f"hip_{side}", hip_joint)
        put(f"knee_{side}", (0.1 * sign, 0.08 + half_reach, knee_forward))
        put(f"ankle_{side}", ankle)
        put(f"foot_{side}", ankle + np.array([0.0, -0.05, 0.12]))
    cos, sin = np.cos(facing), np.sin(facing)
    yaw = np.array([[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]])
    return local @ yaw.T + base


def figure_spheres(joints: np.ndarray, colour: np.ndarray, instance: int) -> list[Sphere]:
    """The stick figure as spheres: one per joint, two along each bone."""
    spheres = [
        Sphere(joint, 0.11 if i == JOINT["head"] else 0.055, colour, PERSON, instance)
        for i, joint in enumerate(joints)
    ]
    for a, b in BONES:
        for fraction in (1 / 3, 2 / 3):
            point = joints[JOINT[a]] * (1 - fraction) + joints[JOINT[b]] * fraction
            spheres.append(Sphere(point, 0.05, colour, PERSON, instance))
    return spheres


@dataclass(frozen=True)
class Clip:
    """Everything that varies over time in one clip, as functions of time t in [0, 1]."""

    rng_seed: int
    action: int
    frames: int

    def layout(self) -> dict:
        rng = np.random.default_rng(self.rng_seed)
        layout = {
            "azimuth": rng.uniform(0, 2 * np.pi),
            "distance": rng.uniform(2.8, 3.6),
            "height": rng.uniform(1.0, 1.6),
            "person": np.array([rng.uniform(-0.7, 0.7), 0.0, rng.uniform(-0.7, 0.7)]),
            "facing": rng.uniform(0, 2 * np.pi),
            "person_colour": rng.uniform(0.3, 0.9, 3),
            "spheres": [
                (
                    np.array([rng.uniform(-1.2, 1.2), 0.0, rng.uniform(-1.2, 1.2)]),
                    rng.uniform(0.25, 0.45),
                    rng.uniform(0.2, 1.0, 3),
                )
                for _ in range(rng.integers(1, 3))
            ],
            "boxes": [
                (
                    np.array([rng.uniform(-1.2, 1.2), 0.0, rng.uniform(-1.2, 1.2)]),
                    rng.uniform(0.2, 0.4, 3),
                    rng.uniform(0, np.pi),
                    rng.uniform(0.2, 1.0, 3),
                )
                for _ in range(rng.integers(1, 3))
            ],
            "mover": int(rng.integers(0, 2)),  # 0: the first sphere moves, 1: the first box
            "amplitude": rng.uniform(1.6, 2.0),
        }
        # The mover is the clip's subject: near the point every camera looks at, and larger than the
        # distractors, so the motion that names the class fills the view (and survives a random crop).
        centre = np.array([rng.uniform(-0.3, 0.3), 0.0, rng.uniform(-0.3, 0.3)])
        spheres, boxes = layout["spheres"], layout["boxes"]
        assert isinstance(spheres, list) and isinstance(boxes, list)
        if layout["mover"] == 0:
            spheres[0] = (centre, rng.uniform(0.45, 0.6), spheres[0][2])
        else:
            boxes[0] = (centre, rng.uniform(0.35, 0.5, 3), boxes[0][2], boxes[0][3])
        return layout

    def scene_at(self, layout: dict, t: float) -> tuple[Camera, list[Sphere | Box], np.ndarray]:
        """Camera, primitives and person joints (world) at time t."""
        azimuth = layout["azimuth"] + {6: -0.9 * t, 7: 0.9 * t}.get(self.action, 0.0)
        eye = np.array(
            [np.sin(azimuth) * layout["distance"], layout["height"], np.cos(azimuth) * layout["distance"]]
        )
        camera = Camera.looking_at(eye, LOOK_AT)
        right = camera.rotation[0] * np.array([1.0, 0.0, 1.0])
        ahead = camera.rotation[2] * np.array([1.0, 0.0, 1.0])
        right, ahead = right / np.linalg.norm(right), ahead / np.linalg.norm(ahead)
        if self.action in (6, 7):  # the scene stays put while the camera moves
            first = Camera.looking_at(
                np.array([np.sin(layout["azimuth"]), 0, np.cos(layout["azimuth"])]) * layout["distance"]
                + np.array([0, layout["height"], 0]),
                LOOK_AT,
            )
            right = first.rotation[0] * np.array([1.0, 0.0, 1.0])
            ahead = first.rotation[2] * np.array([1.0, 0.0, 1.0])
        slide = layout["amplitude"] * (t - 0.5)  # metres along the camera's right or forward axis
        lift = 0.6 * layout["amplitude"]
        offset = {
            0: -right * slide,
            1: right * slide,
            2: np.array([0.0, lift * t, 0.0]),
            3: np.array([0.0, lift * (1 - t), 0.0]),
            4: -ahead * slide,
            5: ahead * slide,
        }.get(self.action, np.zeros(3))
        primitives: list[Sphere | Box] = []
        instance = 1
        for k, (base, radius, colour) in enumerate(layout["spheres"]):
            moved = offset if (layout["mover"] == 0 and k == 0) else 0.0
            primitives.append(Sphere(base + [0, radius, 0] + moved, radius, colour, SPHERE, instance))
            instance += 1
        for k, (base, half, yaw, colour) in enumerate(layout["boxes"]):
            moved = offset if (layout["mover"] == 1 and k == 0) else 0.0
            primitives.append(Box(base + [0, half[1], 0] + moved, half, yaw, colour, BOX, instance))
            instance += 1
        joints = skeleton(
            layout["person"],
            layout["facing"],
            arms=t if self.action == 8 else 0.0,
            squat=t if self.action == 9 else 0.0,
        )
        primitives.extend(figure_spheres(joints, layout["person_colour"], instance=0))
        return camera, primitives, joints


# ----------------------------------------------------------------------------- ray casting


@dataclass
class Frame:
    """Per-pixel render buffers of one frame."""

    depth: np.ndarray  # planar depth (camera z), inf where nothing was hit
    normal: np.ndarray  # world normals (3 channels)
    segm: np.ndarray  # class ids
    instance: np.ndarray  # -1 for sky and ground
    albedo: np.ndarray  # (3 channels)


@dataclass(frozen=True)
class Raster:
    """A grid of `rows x cols` pixels over `window` of an image of aspect `aspect` (width / height).

    The full image spans `u, v` in [0, 1] (width, height); `window` picks a part of it, so a crop
    of a rendered frame can be rendered directly (the tests compare augmented labels with that).
    """

    rows: int
    cols: int
    aspect: float = 1.0
    window: Window = FULL

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """`u` of each column's and `v` of each row's pixel centre, in the full image."""
        u = self.window.left + (np.arange(self.cols) + 0.5) / self.cols * self.window.width
        v = self.window.top + (np.arange(self.rows) + 0.5) / self.rows * self.window.height
        return u, v

    def to_grid(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-image `u, v` -> fractional (column, row) of this grid."""
        return (
            (u - self.window.left) / self.window.width * self.cols,
            (v - self.window.top) / self.window.height * self.rows,
        )


def camera_xy(u: np.ndarray, v: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Image `u, v` -> camera-plane `x/z, y/z` (focal length `FOCAL` image widths, centred)."""
    return (u - 0.5) / FOCAL, (v - 0.5) / (aspect * FOCAL)


def pixel_rays(camera: Camera, raster: Raster) -> np.ndarray:
    """World ray directions `[rows, cols, 3]` scaled so a ray's parameter equals planar depth."""
    u, v = raster.centres()
    x, y = np.meshgrid(*camera_xy(u, v, raster.aspect))
    directions_cam = np.stack([x, y, np.ones_like(x)], axis=-1)
    return directions_cam @ camera.rotation  # camera -> world is the transpose


def screen_rects(
    camera: Camera, primitives: list[Sphere | Box], raster: Raster
) -> list[tuple[slice, slice] | None]:
    """Per primitive, the pixel rows/cols that can see it (its 8 enclosing corners projected, one pixel
    of margin), or None when it is off screen. All primitives are projected in one go: a frame has dozens
    of small ones (the stick figure), and a call for each cost more than their ray casts."""
    cam = camera.to_camera(np.stack([primitive_corners(p) for p in primitives]))  # [P, 8, 3]
    behind = np.any(cam[..., 2] <= 1e-3, axis=-1).tolist()
    with np.errstate(divide="ignore", invalid="ignore"):  # behind the camera: inf/NaN, not used below
        col, row = raster.to_grid(
            cam[..., 0] / cam[..., 2] * FOCAL + 0.5, cam[..., 1] / cam[..., 2] * FOCAL * raster.aspect + 0.5
        )
        first = np.maximum(np.floor(np.stack([row.min(-1), col.min(-1)], -1)) - 1, 0).astype(int).tolist()
        last = np.minimum(np.ceil(np.stack([row.max(-1), col.max(-1)], -1)) + 1, (raster.rows, raster.cols))
        last = last.astype(int).tolist()
    everywhere = (slice(0, raster.rows), slice(0, raster.cols))  # unbounded projection: test every pixel
    return [
        everywhere if is_behind else None if r1 <= r0 or c1 <= c0 else (slice(r0, r1), slice(c0, c1))
        for is_behind, (r0, c0), (r1, c1) in zip(behind, first, last, strict=True)
    ]


def hit_sphere(origin: np.ndarray, rays: np.ndarray, sphere: Sphere) -> tuple[np.ndarray, np.ndarray]:
    oc = origin - sphere.centre
    a = np.einsum("...k,...k->...", rays, rays)
    b = 2 * rays @ oc
    c = oc @ oc - sphere.radius**2
    disc = b * b - 4 * a * c
    t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    t = np.where(t > 0, t, np.inf)
    normal = (origin + t[..., None] * rays - sphere.centre) / sphere.radius
    return t, normal


def hit_box(origin: np.ndarray, rays: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    cos, sin = np.cos(box.yaw), np.sin(box.yaw)
    yaw = np.array([[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]])  # box -> world
    o = (origin - box.centre) @ yaw
    d = rays @ yaw
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-box.half - o) / d, (box.half - o) / d
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    near = np.nan_to_num(near, nan=-np.inf)
    far = np.nan_to_num(far, nan=np.inf)
    t_near, t_far = near.max(-1), far.min(-1)
    t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
    axis = near.argmax(-1)
    normal_local = np.zeros(rays.shape)
    np.put_along_axis(normal_local, axis[..., None], -np.sign(np.take_along_axis(d, axis[..., None], -1)), -1)
    return t, normal_local @ yaw.T


_CORNER_SIGNS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)


def box_corners(box: Box) -> np.ndarray:
    cos, sin = np.cos(box.yaw), np.sin(box.yaw)
    yaw = np.array([[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]])
    return (_CORNER_SIGNS * box.half) @ yaw.T + box.centre


def sphere_corners(sphere: Sphere) -> np.ndarray:
    return _CORNER_SIGNS * sphere.radius + sphere.centre


def primitive_corners(primitive: Sphere | Box) -> np.ndarray:
    return sphere_corners(primitive) if isinstance(primitive, Sphere) else box_corners(primitive)


def hit_primitive(
    origin: np.ndarray, rays: np.ndarray, primitive: Sphere | Box
) -> tuple[np.ndarray, np.ndarray]:
    return (
        hit_sphere(origin, rays, primitive)
        if isinstance(primitive, Sphere)
        else hit_box(origin, rays, primitive)
    )


def render(camera: Camera, primitives: list[Sphere | Box], raster: Raster) -> Frame:
    """Ray cast one frame on `raster`: ground plane first, then every primitive in its rect."""
    rays = pixel_rays(camera, raster)
    origin = camera.position
    with np.errstate(divide="ignore"):
        t_ground = np.where(rays[..., 1] < 0, -origin[1] / rays[..., 1], np.inf)
    t_ground = np.where(t_ground <= FAR, t_ground, np.inf)
    frame = Frame(
        depth=t_ground,
        normal=np.broadcast_to(np.array([0.0, 1.0, 0.0]), rays.shape).copy(),
        segm=np.where(np.isfinite(t_ground), GROUND, SKY).astype(np.uint16),
        instance=np.full((raster.rows, raster.cols), -1, dtype=np.int32),
        albedo=ground_albedo(origin + np.where(np.isfinite(t_ground), t_ground, 0)[..., None] * rays),
    )
    for primitive, rect in zip(primitives, screen_rects(camera, primitives, raster), strict=True):
        if rect is None:
            continue
        t, normal = hit_primitive(origin, rays[rect], primitive)
        closer = t < frame.depth[rect]
        if not closer.any():
            continue
        frame.depth[rect][closer] = t[closer]  # basic slices are views: these write into the frame
        frame.normal[rect][closer] = normal[closer]
        frame.segm[rect][closer] = primitive.segm
        frame.instance[rect][closer] = primitive.instance
        frame.albedo[rect][closer] = primitive.colour
    return frame


def ground_albedo(points: np.ndarray) -> np.ndarray:
    """A half-metre checkerboard, so camera motion is visible against the ground."""
    checker = (np.floor(points[..., 0] * 2) + np.floor(points[..., 2] * 2)) % 2
    return np.where(checker[..., None] > 0, [0.55, 0.5, 0.45], [0.35, 0.33, 0.3])


def shade(frame: Frame, raster: Raster) -> np.ndarray:
    """uint8 RGB: Lambertian shading of the albedo under one directional light, over a sky gradient."""
    lambert = np.clip(frame.normal @ LIGHT, 0.0, 1.0)[..., None]
    rgb = frame.albedo * (0.35 + 0.65 * lambert)
    sky = (0.85 - 0.3 * raster.centres()[1])[:, None, None] * np.array([0.6, 0.75, 1.0])
    rgb = np.where(np.isfinite(frame.depth)[..., None], rgb, sky)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- labels


def label_maps(camera: Camera, frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (NaN for sky), normals in the OpenCV camera frame (NaN for sky), class ids."""
    sky = ~np.isfinite(frame.depth)
    depth = np.where(sky, np.nan, frame.depth)
    normal = frame.normal @ camera.rotation.T
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[sky] = np.nan
    return depth, normal, frame.segm


def instance_boxes(frame: Frame, classes_of: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised xyxy boxes of every visible instance (in instance order) and their class ids."""
    height, width = frame.instance.shape
    boxes, classes = [], []
    for instance in sorted(classes_of):
        rows, cols = np.nonzero(frame.instance == instance)
        if rows.size:
            boxes.append(
                [cols.min() / width, rows.min() / height, (cols.max() + 1) / width, (rows.max() + 1) / height]
            )
            classes.append(classes_of[instance])
    return np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(classes, dtype=np.int16)


def stack_boxes(per_frame: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame box lists of varying length -> `[T,N,4]`, `[T,N]` with NaN / -1 padding."""
    width = max(1, max(len(classes) for _, classes in per_frame))
    boxes = np.full((len(per_frame), width, 4), np.nan, dtype=np.float32)
    classes = np.full((len(per_frame), width), -1, dtype=np.int16)
    for t, (frame_boxes, frame_classes) in enumerate(per_frame):
        boxes[t, : len(frame_classes)] = frame_boxes
        classes[t, : len(frame_classes)] = frame_classes
    return boxes, classes


def frame_times(frames: int, rng: np.random.Generator | None = None) -> list[float]:
    """Clip times in [0, 1] of the `frames` frames: the middle of each of `frames` equal segments, or
    (train mode, `rng` given) a uniformly random time in each, as PySlowFast samples SSv2."""
    offsets = np.full(frames, 0.5) if rng is None else rng.uniform(0.0, 1.0, frames)
    return [float((k + offsets[k]) / frames) for k in range(frames)]


def render_clip(clip: Clip, image: Raster, labels: Raster, times: list[float] | None = None) -> Sample:
    """Render RGB on `image` and exact labels on `labels` (a second, cheaper ray cast) at `times`."""
    layout = clip.layout()
    video, depth, normal, segm, pose, boxes = [], [], [], [], [], []
    for t in times if times is not None else frame_times(clip.frames):
        camera, primitives, joints = clip.scene_at(layout, t)
        frame = render(camera, primitives, image)
        video.append(shade(frame, image))
        label_frame = frame if labels == image else render(camera, primitives, labels)
        d, n, s = label_maps(camera, label_frame)
        depth.append(d)
        normal.append(n)
        segm.append(s)
        pose.append(camera.to_camera(joints))
        boxes.append(instance_boxes(frame, {p.instance: p.segm for p in primitives}))
    box_array, box_classes = stack_boxes(boxes)
    return Sample(
        video=np.stack(video),
        fps=FPS,
        frame_indices=list(range(len(video))),
        labels={
            "depth.npy": np.stack(depth).astype(np.float16),
            "normal.npy": np.stack(normal).astype(np.float16),
            "segm.npy": np.stack(segm).astype(np.uint16),
            "pose3d.npy": np.stack(pose).astype(np.float32),
            "boxes.npy": box_array,
            "boxes_cls.npy": box_classes,
        },
        label=clip.action,
        label_name=ACTIONS[clip.action],
        extra={"segm_space": SEGM_SPACE, "box_space": SEGM_SPACE, "intrinsics": intrinsics(image)},
    )


def intrinsics(raster: Raster) -> dict:
    """The pinhole intrinsics of `raster` in its pixels (fx, fy, cx, cy), for drawing 3D pose.

    In pixels of the rendered (source) frame `orig_hw`; `crop_box` says what the stored frame kept.
    """
    u, v = raster.window.left, raster.window.top
    fx = FOCAL * raster.cols / raster.window.width
    fy = FOCAL * raster.aspect * raster.rows / raster.window.height
    return {
        "fx": fx,
        "fy": fy,
        "cx": (0.5 - u) / raster.window.width * raster.cols,
        "cy": (0.5 - v) / raster.window.height * raster.rows,
    }


def source_rasters(config: BuildConfig, aspect: float) -> tuple[Raster, Raster]:
    """The whole rendered frame (short side `--size`, width/height `aspect`) and its label grid."""
    size = config.size
    hw = (size, max(1, round(size * aspect))) if aspect >= 1 else (max(1, round(size / aspect)), size)
    grid = label_hw(hw, config.label_stride)
    square_pixels = hw[1] / hw[0]  # the aspect the pixel grid really has after rounding
    return Raster(hw[0], hw[1], square_pixels), Raster(grid[0], grid[1], square_pixels)


# ----------------------------------------------------------------------------- the adapter


class ProceduralSource(Source):
    name = "procedural"
    version = RENDERER_VERSION
    tasks = ("action", "depth", "normal", "segm", "pose3d", "boxes")
    sampling = SamplingRule("rendered at one time in each of --frames equal segments of the clip")
    splits = ("train", "val")
    description = "built-in ray-cast scenes with exact labels and 10 motion classes (no download)"
    needs_root = False
    options = (Option("aspect", "float", 4 / 3, "width / height of the rendered frames", minimum=0.25),)

    @classmethod
    def fixed_camera(cls, hw: tuple[int, int]) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels of a stored `hw` frame: every scene is rendered through one pinhole,
        `FOCAL` image widths long, centred (`pipeline.show` draws poses with it)."""
        h, w = hw
        return FOCAL * w, FOCAL * w, w / 2, h / 2

    def split_size(self, split: str) -> int:
        train = self.config.num_samples if self.config.num_samples is not None else DEFAULT_TRAIN_SAMPLES
        return train if split == "train" else max(train // 4, len(ACTIONS))

    def items(self, split: str) -> Iterator[Item]:
        for index in range(self.split_size(split)):
            seed = int(
                np.random.SeedSequence([self.config.seed, self.splits.index(split), index]).generate_state(1)[
                    0
                ]
            )
            action = index % len(ACTIONS)
            yield Item(
                id=f"{split}-{index:06d}",
                split=split,
                fingerprint=value_fingerprint(RENDERER_VERSION, seed, action),
                payload={"seed": seed, "action": action},
            )

    def load(self, item: Item) -> Sample:
        clip = Clip(rng_seed=item.payload["seed"], action=item.payload["action"], frames=self.config.frames)
        image, labels = source_rasters(self.config, self.option("aspect"))
        times = frame_times(self.config.frames, sampling_rng(self.config, item))
        return render_clip(clip, image, labels, times)
