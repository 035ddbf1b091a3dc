"""Paint elsewhere, train here: export-views, then masks from CVAT / labelme / COCO / PNG imported."""
import json
import shutil

import numpy as np
import pytest

from core.cli import main
from core.exchange import ExchangeError, import_annotations
from core.fileio import read_rgb, write_indexed_png, write_png
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.project import UNLABELLED_ID, Project, default_label_set
from project_support import project_on

SIZE = 16
HEAD, LEFT_EAR = 1, 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A project on a tiny backbone and its export-views folder (2 identities x 2 views, CVAT)."""
    root = tmp_path_factory.mktemp("exchange")
    folder = project_on(root / "project",
                        TriPlaneGenerator.from_config(tiny_config(plane_resolution=32, neural_resolution=SIZE), 0))
    out = root / "views"
    assert main(["export-views", "--project", str(folder), "--n", "2", "--views=-30,0;30,0", "--format", "cvat",
                 "--out", str(out), "--size", str(SIZE)]) == 0
    return folder, out


@pytest.fixture
def project_copy(exported, tmp_path):
    """A fresh copy of the project (no annotations) beside a copy of the exported views."""
    folder, views = exported
    shutil.copytree(folder, tmp_path / "project")
    shutil.copytree(views, tmp_path / "views")
    return tmp_path / "project", tmp_path / "views"


def label_name(label_id):
    return default_label_set().by_id(label_id).name


def stored_masks(folder):
    with Project.open(folder) as project:
        return {project.load_annotation(m.id).meta.camera.yaw: project.load_annotation(m.id).mask
                for m in project.annotations()}, len(project.annotations())


def cvat_rle(mask):
    """CVAT's run lengths (row-major, first run of 0s) of a boolean array: the test's own encoder."""
    flat = mask.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return ",".join(str(v) for v in np.diff(np.concatenate([[0], changes])))


def test_export_views_writes_images_sidecar_and_label_configs(exported):
    folder, out = exported
    images = sorted(p.name for p in (out / "images").glob("*.png"))
    assert images == ["0000_00.png", "0000_01.png", "0001_00.png", "0001_01.png"]
    assert read_rgb(out / "images" / "0001_01.png").shape == (SIZE, SIZE, 3)
    sidecar = json.loads((out / "studio_views.json").read_text())
    entry = sidecar["images"]["0001_01"]
    assert entry["camera"]["yaw"] == 30.0 and entry["size"] == SIZE and "seed" in entry["identity"]
    labels = json.loads((out / "cvat_labels.json").read_text())
    assert [label["name"] for label in labels] == [label.name for label in default_label_set().labels]
    assert "head:" in (out / "labelmap.txt").read_text()


def test_cvat_xml_masks_and_polygons_import_and_reimport_updates(project_copy, capsys):
    folder, views = project_copy
    head = np.zeros((6, 8), bool)
    head[1:5, 2:7] = True
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
  <image id="0" name="0000_00.png" width="{SIZE}" height="{SIZE}">
    <mask label="{label_name(HEAD)}" source="manual" occluded="0" rle="{cvat_rle(head)}" left="3" top="4" width="8" height="6" z_order="0"/>
    <polygon label="{label_name(LEFT_EAR)}" source="manual" occluded="0" points="5,5;8,5;8,8;5,8" z_order="1"/>
  </image>
  <image id="1" name="0000_01.png" width="{SIZE}" height="{SIZE}">
    <box label="{label_name(HEAD)}" source="manual" occluded="0" xtl="0" ytl="0" xbr="3" ybr="3" z_order="0"/>
  </image>
</annotations>"""
    (views / "annotations.xml").write_text(xml)
    assert main(["import-annotations", "--project", str(folder), "--from", str(views)]) == 0
    assert "2 new annotation(s), 0 updated" in capsys.readouterr().out
    masks, count = stored_masks(folder)
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[4:10, 3:11][head] = HEAD
    expected[5:9, 5:9] = LEFT_EAR  # z_order 1: on top of the head mask
    assert count == 2 and np.array_equal(masks[-30.0], expected)
    assert masks[30.0][:4, :4].min() == HEAD and masks[30.0].sum() == 16 * HEAD
    assert main(["import-annotations", "--project", str(folder), "--from", str(views)]) == 0
    assert "0 new annotation(s), 2 updated" in capsys.readouterr().out
    assert stored_masks(folder)[1] == 2


def test_coco_rle_round_trip_and_unordered_overlap_refused(project_copy):
    from pycocotools import mask as coco_mask

    folder, views = project_copy
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[2:12, 3:13], labels[4:7, 4:8] = HEAD, LEFT_EAR
    coco_dir = views / "coco"
    coco_dir.mkdir()

    def document(masks):
        annotations = []
        for index, (category, mask) in enumerate(masks, 1):
            rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({"id": index, "image_id": 7, "category_id": category, "iscrowd": 0,
                                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
        return {"images": [{"id": 7, "file_name": "0001_00.png", "height": SIZE, "width": SIZE}],
                "categories": [{"id": HEAD, "name": label_name(HEAD)}, {"id": LEFT_EAR, "name": label_name(LEFT_EAR)}],
                "annotations": annotations}

    (coco_dir / "instances.json").write_text(json.dumps(document([(HEAD, labels == HEAD), (LEFT_EAR, labels == LEFT_EAR)])))
    with Project.open(folder, writable=True) as project:
        summary = import_annotations(project, coco_dir)
    assert summary.format == "COCO" and len(summary.added) == 1
    assert np.array_equal(stored_masks(folder)[0][-30.0], labels)
    overlapping = document([(HEAD, labels > 0), (LEFT_EAR, labels == LEFT_EAR)])
    overlapping["images"][0]["file_name"] = "0001_01.png"
    (coco_dir / "instances.json").write_text(json.dumps(overlapping))
    with Project.open(folder, writable=True) as project, pytest.raises(ExchangeError, match="instances.json.*overlap"):
        import_annotations(project, coco_dir)
    assert stored_masks(folder)[1] == 1


def test_labelme_polygons_and_rectangles(project_copy):
    folder, views = project_copy
    shapes = [{"label": label_name(HEAD), "points": [[1, 1], [10, 1], [10, 10], [1, 10]], "shape_type": "polygon"},
              {"label": label_name(LEFT_EAR), "points": [[2, 2], [4, 4]], "shape_type": "rectangle"}]
    (views / "0000_01.json").write_text(json.dumps({"version": "5.4.1", "shapes": shapes, "imagePath": "images/0000_01.png",
                                                    "imageHeight": SIZE, "imageWidth": SIZE, "imageData": None}))
    with Project.open(folder, writable=True) as project:
        assert import_annotations(project, views).format == "labelme"
    mask = stored_masks(folder)[0][30.0]
    assert (mask[1:11, 1:11] > 0).all() and mask[0].max() == 0 and mask[11:].max() == 0
    assert (mask[2:5, 2:5] == LEFT_EAR).all() and mask[5, 5] == HEAD
    with Project.open(folder, writable=True) as project:
        assert len(import_annotations(project, views, uncovered="unlabelled").updated) == 1
    mask = stored_masks(folder)[0][30.0]
    assert mask[0, 0] == UNLABELLED_ID and mask[5, 5] == HEAD


def test_cvat_segmentation_masks_and_indexed_pngs(project_copy):
    folder, views = project_copy
    label_set = default_label_set()
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[3:9, 3:9] = HEAD
    segmentation = views / "segmentation"
    (segmentation / "SegmentationClass").mkdir(parents=True)
    shutil.copy(views / "labelmap.txt", segmentation / "labelmap.txt")
    write_png(segmentation / "SegmentationClass" / "0000_00.png", label_set.palette()[labels])
    with Project.open(folder, writable=True) as project:
        assert import_annotations(project, segmentation).format == "CVAT segmentation mask"
    pngs = views / "painted"
    (pngs / "masks").mkdir(parents=True)
    write_indexed_png(pngs / "masks" / "0001_01.png", labels * 2, label_set.palette())
    with Project.open(folder, writable=True) as project:
        assert import_annotations(project, pngs).format == "indexed PNG"
    masks, count = stored_masks(folder)
    assert count == 2 and np.array_equal(masks[-30.0], labels) and np.array_equal(masks[30.0], labels * 2)


def test_bad_files_are_refused_whole_and_named(project_copy, capsys):
    folder, views = project_copy
    labelme = views / "labelme"
    labelme.mkdir()

    def shapes(label, size=SIZE, image="0000_00.png"):
        return json.dumps({"shapes": [{"label": label, "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon"}],
                           "imagePath": image, "imageHeight": size, "imageWidth": size})

    cases = [(shapes("tail"), "uses label 'tail'"), (shapes(label_name(HEAD), size=20), "is 20x20"),
             (shapes(label_name(HEAD), image="9999_00.png"), "'9999_00' has no entry")]
    for text, message in cases:
        (labelme / "a.json").write_text(text)
        assert main(["import-annotations", "--project", str(folder), "--from", str(labelme)]) == 2
        error = capsys.readouterr().err
        assert "a.json" in error and message in error
    assert stored_masks(folder)[1] == 0
    assert main(["import-annotations", "--project", str(folder), "--from", str(views / "nothing")]) == 2
    (labelme / "a.json").write_text(shapes(label_name(HEAD)))
    sidecar = json.loads((views / "studio_views.json").read_text())
    sidecar["backbone_hash"] = "0" * 64
    (labelme / "studio_views.json").write_text(json.dumps(sidecar))
    assert main(["import-annotations", "--project", str(folder), "--from", str(labelme)]) == 2
    assert "another backbone" in capsys.readouterr().err


def test_a_failed_write_puts_the_file_back(project_copy, monkeypatch):
    folder, views = project_copy
    masks = views / "painted"
    (masks / "masks").mkdir(parents=True)
    for stem in ("0000_00", "0000_01"):
        write_indexed_png(masks / "masks" / f"{stem}.png", np.full((SIZE, SIZE), HEAD, np.uint8), default_label_set().palette())
    calls = []
    original = Project.add_annotation

    def fail_second(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(self, *args)

    monkeypatch.setattr(Project, "add_annotation", fail_second)
    with Project.open(folder, writable=True) as project, pytest.raises(OSError):
        import_annotations(project, masks)
    assert stored_masks(folder)[1] == 0
