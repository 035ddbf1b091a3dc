"""Painted masks from other tools' files, as (H, W) label-id arrays keyed by image file stem.

Each reader takes one annotation file and returns every image's mask in it, or raises an
ExchangeError naming the file; nothing is written here. Pixels no shape covers get `fill`:
background (id 0) by default, as in these tools' own mask exports, or UNLABELLED_ID when only
some parts were outlined (import-annotations --uncovered unlabelled). Colour and indexed PNGs
say every pixel themselves. Shapes are drawn in the tool's order (labelme: file
order; CVAT: z_order, then file order), later ones on top, so a part drawn over the head outline
wins. Two masks without an order between them (COCO annotations, CVAT masks of one z_order) may
not overlap with different labels: which one was meant is unknowable, so the file is refused.
"""
from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image, ImageDraw

from core.exchange.views import ExchangeError, label_ids_by_name


class _Canvas:
    """One image's label map, painted shape by shape, with the overlap rule above."""

    def __init__(self, source: Path, stem: str, size: tuple[int, int], fill: int):
        self.source, self.stem = source, stem
        self.labels = np.full(size, fill, np.uint8)
        self.unordered = np.full(size, -1, np.int32)  # label of an unordered mask here, -1: none
        self.unordered_group = np.full(size, -1, np.int64)

    def paint(self, shape: np.ndarray, label_id: int, group: int | None = None) -> None:
        """Paint a boolean mask; `group` marks masks with no order between them (same group)."""
        if shape.shape != self.labels.shape:
            raise ExchangeError(f"{self.source}: a mask of {self.stem} is {shape.shape[1]}x{shape.shape[0]}, "
                                f"the image is {self.labels.shape[1]}x{self.labels.shape[0]}")
        if group is not None:
            clash = shape & (self.unordered_group == group) & (self.unordered != label_id)
            if clash.any():
                y, x = np.argwhere(clash)[0]
                raise ExchangeError(f"{self.source}: in {self.stem}, masks of label ids {int(self.unordered[y, x])} "
                                    f"and {label_id} overlap ({int(clash.sum())} px, first at x={x}, y={y}) "
                                    "with no order between them")
            self.unordered[shape], self.unordered_group[shape] = label_id, group
        self.labels[shape] = label_id


def _label_id(names: dict[str, int], name: str | None, source: Path, stem: str) -> int:
    if name is None or name.lower() not in names:
        raise ExchangeError(f"{source}: {stem} uses label {name!r}, which the project's label set does not have "
                            f"(it has {', '.join(sorted(names))})")
    return names[name.lower()]


def _polygon(points, size: tuple[int, int]) -> np.ndarray:
    """Filled polygon, rasterised as labelme does (PIL, outline included)."""
    image = Image.new("1", (size[1], size[0]), 0)
    xy = [(float(x), float(y)) for x, y in points]
    ImageDraw.Draw(image).polygon(xy, outline=1, fill=1)
    return np.asarray(image, bool)


def _draw(kind: str, points, size: tuple[int, int]) -> np.ndarray:
    image = Image.new("1", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(image)
    (x0, y0), (x1, y1) = points[0], points[1]
    if kind == "rectangle":
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    else:  # circle: centre and a point on the circumference
        r = float(np.hypot(x1 - x0, y1 - y0))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], outline=1, fill=1)
    return np.asarray(image, bool)


# ---------------------------------------------------------------------------- labelme
def read_labelme(path: Path, label_set, fill: int = 0) -> dict[str, np.ndarray]:
    document = _read_json(path)
    try:
        stem = Path(document["imagePath"]).stem
        size = (int(document["imageHeight"]), int(document["imageWidth"]))
        shapes = list(document["shapes"])
    except (KeyError, TypeError, ValueError) as error:
        raise ExchangeError(f"{path}: not a labelme file ({type(error).__name__}: {error})") from error
    names, canvas = label_ids_by_name(label_set), _Canvas(path, stem, size, fill)
    for shape in shapes:
        kind = shape.get("shape_type") or "polygon"
        label_id = _label_id(names, shape.get("label"), path, stem)
        points = shape.get("points") or []
        if kind == "polygon" and len(points) >= 3:
            canvas.paint(_polygon(points, size), label_id)
        elif kind in ("rectangle", "circle") and len(points) == 2:
            canvas.paint(_draw(kind, points, size), label_id)
        else:
            raise ExchangeError(f"{path}: {stem} has a {kind!r} shape with {len(points)} points; "
                                "polygons, rectangles and circles are read")
    return {stem: canvas.labels}


# ---------------------------------------------------------------------------- COCO
def read_coco(path: Path, label_set, fill: int = 0) -> dict[str, np.ndarray]:
    from pycocotools import mask as coco_mask

    document = _read_json(path)
    try:
        images = {int(image["id"]): image for image in document["images"]}
        categories = {int(c["id"]): c["name"] for c in document["categories"]}
        annotations = list(document["annotations"])
    except (KeyError, TypeError, ValueError) as error:
        raise ExchangeError(f"{path}: not a COCO file ({type(error).__name__}: {error})") from error
    names = label_ids_by_name(label_set)
    canvases = {}
    for image_id, image in images.items():
        stem = Path(str(image.get("file_name", ""))).stem
        canvases[image_id] = _Canvas(path, stem, (int(image["height"]), int(image["width"])), fill)
    for annotation in annotations:
        canvas = canvases.get(annotation.get("image_id"))
        if canvas is None:
            raise ExchangeError(f"{path}: annotation {annotation.get('id')} refers to image "
                                f"{annotation.get('image_id')!r}, which the file does not list")
        label_id = _label_id(names, categories.get(annotation.get("category_id")), path, canvas.stem)
        height, width = canvas.labels.shape
        segmentation = annotation.get("segmentation")
        try:
            if isinstance(segmentation, list):  # polygons
                rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
                rle = coco_mask.frPyObjects(segmentation, *segmentation["size"])  # uncompressed RLE
            elif isinstance(segmentation, dict):
                rle = dict(segmentation, counts=str(segmentation["counts"]).encode("ascii"))
            else:
                raise ValueError(f"segmentation is {type(segmentation).__name__}")
            mask = coco_mask.decode(rle).astype(bool)
        except (KeyError, TypeError, ValueError) as error:
            raise ExchangeError(f"{path}: annotation {annotation.get('id')} of {canvas.stem} has an unreadable "
                                f"segmentation ({error})") from error
        canvas.paint(mask, label_id, group=0)
    return {canvas.stem: canvas.labels for canvas in canvases.values()}


# ---------------------------------------------------------------------------- CVAT
def read_cvat_xml(path: Path, label_set, fill: int = 0) -> dict[str, np.ndarray]:
    """CVAT for images 1.1: <mask> (RLE inside its box), <polygon> and <box> shapes."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise ExchangeError(f"{path}: not readable XML ({error})") from error
    if root.tag != "annotations":
        raise ExchangeError(f"{path}: not a CVAT for images file (root <{root.tag}>, expected <annotations>)")
    names, masks = label_ids_by_name(label_set), {}
    for image in root.iter("image"):
        stem = Path(image.get("name", "")).stem
        try:
            size = (int(image.get("height")), int(image.get("width")))
        except (TypeError, ValueError):
            raise ExchangeError(f"{path}: <image name={image.get('name')!r}> has no width/height") from None
        canvas = _Canvas(path, stem, size, fill)
        shapes = [(int(element.get("z_order", 0)), order, element) for order, element in enumerate(image)]
        for z_order, _, element in sorted(shapes, key=lambda item: item[:2]):
            label_id = _label_id(names, element.get("label"), path, stem)
            if element.tag == "mask":
                canvas.paint(_cvat_mask(element, size, path, stem), label_id, group=z_order)
            elif element.tag == "polygon":
                canvas.paint(_polygon(_cvat_points(element, path, stem), size), label_id)
            elif element.tag == "box":
                box = [(float(element.get("xtl")), float(element.get("ytl"))),
                       (float(element.get("xbr")), float(element.get("ybr")))]
                canvas.paint(_draw("rectangle", box, size), label_id)
            elif element.tag != "tag":
                raise ExchangeError(f"{path}: {stem} has a <{element.tag}> shape; masks, polygons and boxes are read")
        masks[stem] = canvas.labels
    return masks


def _cvat_points(element, path: Path, stem: str) -> list[tuple[float, float]]:
    try:
        return [tuple(float(v) for v in pair.split(",")) for pair in element.get("points", "").split(";")]
    except ValueError:
        raise ExchangeError(f"{path}: a polygon of {stem} has unreadable points") from None


def _cvat_mask(element, size: tuple[int, int], path: Path, stem: str) -> np.ndarray:
    """CVAT's mask RLE: run lengths, first of 0s, row by row over the box left/top/width/height."""
    try:
        runs = np.array([int(v) for v in element.get("rle", "").split(",")], np.int64)
        left, top, width, height = (int(element.get(k)) for k in ("left", "top", "width", "height"))
    except (TypeError, ValueError):
        raise ExchangeError(f"{path}: a mask of {stem} has unreadable rle/left/top/width/height") from None
    if (runs < 0).any() or runs.sum() != width * height or left < 0 or top < 0 \
            or left + width > size[1] or top + height > size[0]:
        raise ExchangeError(f"{path}: a mask of {stem} does not fit its box or the {size[1]}x{size[0]} image")
    values = np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape(height, width)
    mask = np.zeros(size, bool)
    mask[top:top + height, left:left + width] = values
    return mask


def read_cvat_segmentation(folder: Path, label_set, fill: int = 0) -> dict[str, np.ndarray]:
    """CVAT's 'Segmentation mask 1.1' export: labelmap.txt + SegmentationClass/*.png (colours).

    `fill` is unused: every pixel has a colour."""
    from core.fileio import read_rgb

    labelmap = folder / "labelmap.txt"
    names, colours = label_ids_by_name(label_set), {}
    try:
        lines = labelmap.read_text("utf-8").splitlines()
    except OSError as error:
        raise ExchangeError(f"{labelmap}: unreadable ({error})") from error
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        try:
            name, colour = line.split(":")[:2]
            rgb = tuple(int(c) for c in colour.split(","))
        except ValueError:
            raise ExchangeError(f"{labelmap}: unreadable line {line!r} (expected name:r,g,b::)") from None
        colours[rgb] = _label_id(names, name, labelmap, "labelmap.txt")
    masks = {}
    for png in sorted((folder / "SegmentationClass").glob("*.png")):
        try:
            image = read_rgb(png)
        except (OSError, ValueError) as error:
            raise ExchangeError(f"{png}: unreadable ({error})") from error
        labels = np.zeros(image.shape[:2], np.uint8)
        known = np.zeros(image.shape[:2], bool)
        for colour, label_id in colours.items():
            here = np.all(image == colour, axis=-1)
            labels[here], known = label_id, known | here
        if not known.all():
            y, x = np.argwhere(~known)[0]
            raise ExchangeError(f"{png}: colour {tuple(int(c) for c in image[y, x])} at x={x}, y={y} is not in {labelmap}")
        masks[png.stem] = labels
    return masks


# ---------------------------------------------------------------------------- indexed PNGs
def read_indexed_masks(folder: Path, label_set, fill: int = 0) -> dict[str, np.ndarray]:
    """A folder of indexed or greyscale PNGs of the project's label ids (255: unlabelled).

    `fill` is unused: every pixel has a value."""
    from core.fileio import read_indexed_png

    known = label_set.id_lookup()
    masks = {}
    for png in sorted(folder.glob("*.png")):
        try:
            labels = read_indexed_png(png)[0]
        except ValueError as error:
            raise ExchangeError(str(error)) from error
        unknown = sorted(set(np.unique(labels).tolist()) - set(np.flatnonzero(known).tolist()))
        if unknown:
            raise ExchangeError(f"{png}: label ids {unknown} are not in the project's label set")
        masks[png.stem] = labels
    return masks


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ExchangeError(f"{path}: unreadable JSON ({error})") from error
