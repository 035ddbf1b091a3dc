"""`evaluate downstream`: the paper's downstream tables on the procedural category.

Arms, all tested on the same procedural test sets (core.downstream.testsets):
* datasetnerf       the segmenter trained on factory output (semantic-branch labels of backbone
                    renders of new identities), from a --dataset folder or generated in-process
                    through the factory's own renderer;
* datasetgan        the same segmenter on the same images labelled by the 2D pixel classifier;
* annotations_only  the same segmenter on the annotations alone (backbone render + painted mask).

Parts: 'main' (the three arms at the largest pair count), 'pairs' (datasetnerf and datasetgan
against the number of pairs), 'annotations' (datasetnerf and annotations_only against the number
of annotations) and 'pointclouds' (PointNet against the number of training clouds).

With a work folder, everything expensive is kept there (trained semantic branches through their
own checkpoints, generated pairs in chunks, each finished result as JSON), so an interrupted run
started again continues where it stopped and a finished one only re-reads its results.
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.downstream.datasetgan import PixelClassifierSettings, label_pairs, train_pixel_ensemble
from core.downstream.pointnet import PointNetSettings, point_figures, train_pointnet
from core.downstream.sources import (VIEWS_PER_IDENTITY, PairSet, annotation_pairs, generate_identities,
                                     generation_seeds)
from core.downstream.testsets import (CLASS_NAMES, TEST_BACKGROUND, individual_test_set, point_cloud_test_set,
                                      video_test_set)
from core.downstream.training import SegmenterSettings, predict, segmentation_figures, train_segmenter
from core.factory.views import ALPHA_THRESHOLD
from core.fileio import atomic_write_bytes, atomic_write_json
from core.procedural import NUM_CLASSES, HeadParams, ProceduralHead, mirror_label_ids, purpose_of_seed

PARTS = ("main", "pairs", "annotations", "pointclouds")
ARMS = ("datasetnerf", "datasetgan", "annotations_only")


@dataclass
class DownstreamSettings:
    resolution: int = 64
    pairs: tuple = (100, 300, 1000)
    annotations: tuple = (30, 45, 90)
    annotation_scale_pairs: int = 300
    clouds: tuple = (25, 50, 100)
    individual: int = 90
    video_orbits: int = 2
    video_frames: int = 61
    test_clouds: int = 20
    semantic_steps: int = 1500
    annotation_resolution: int = 128
    views_per_identity: int = VIEWS_PER_IDENTITY
    identities_per_chunk: int = 25  # generated identities kept per file of the work folder
    cloud_alpha_threshold: float = ALPHA_THRESHOLD  # the factory's: opacity below it makes no point
    label_quality_pairs: int = 200  # generated pairs whose labels are compared with procedural truth
    parts: tuple = PARTS
    arms: tuple = ARMS  # which arms the segmenter parts train (all, unless a run is split)
    segmenter: SegmenterSettings = field(default_factory=lambda: SegmenterSettings(steps=600))
    pixel_classifier: PixelClassifierSettings = field(default_factory=PixelClassifierSettings)
    pointnet: PointNetSettings = field(default_factory=PointNetSettings)

    def describe(self) -> dict:
        settings = asdict(self)
        settings["segmenter"].pop("flip_table", None)
        return settings


def quick_settings() -> DownstreamSettings:
    """A few seconds end to end: for tests and for checking an install, not for figures."""
    return DownstreamSettings(
        resolution=32, pairs=(4, 8), annotations=(3, 6), annotation_scale_pairs=4, clouds=(1, 2),
        individual=4, video_orbits=1, video_frames=4, test_clouds=2, semantic_steps=3,
        annotation_resolution=32, views_per_identity=2, identities_per_chunk=2,
        # A random (untrained) backbone is a faint fog: a low threshold still gives it points.
        cloud_alpha_threshold=0.1,
        segmenter=SegmenterSettings(steps=3, batch_size=4, width=8),
        pixel_classifier=PixelClassifierSettings(members=2, steps=3, pixels_per_step=256),
        pointnet=PointNetSettings(steps=3, batch_size=2, points_per_cloud=128))


Progress = Callable[[str, int, int], None]


class DownstreamRun:
    """One evaluation: its inputs, its work folder and the results it has so far."""

    def __init__(self, backbone, annotations: list, settings: DownstreamSettings, work_dir=None,
                 dataset: PairSet | None = None, dataset_clouds=None, project_branch=None,
                 progress: Progress | None = None, should_stop: Callable[[], bool] | None = None):
        self.backbone = backbone
        self.annotations = list(annotations)
        self.settings = settings
        self.work = Path(work_dir) if work_dir is not None else None
        self.dataset = dataset
        self.dataset_clouds = dataset_clouds
        self.project_branch = project_branch
        self.report = progress or (lambda stage, done, total: None)
        self.should_stop = should_stop
        self.timings: dict[str, float] = {}
        self._branches, self._generated, self._ensembles, self._results, self._tests = {}, {}, {}, {}, None
        counts = [k for k in settings.annotations if k <= len(self.annotations)]
        if not counts:
            raise ValueError(f"only {len(self.annotations)} annotations; the smallest count asked for is "
                             f"{min(settings.annotations)}")
        self.annotation_counts = counts
        self.full = max(counts)

    # ------------------------------------------------------------------ bookkeeping
    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise InterruptedError("the downstream evaluation was stopped")

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - started

    def _cached_result(self, key: str, compute: Callable[[], dict]) -> dict:
        path = self.work / "results" / f"{key}.json" if self.work else None
        if key not in self._results and path is not None and path.exists():
            self._results[key] = json.loads(path.read_text())
        if key not in self._results:
            self._check_stop()
            self._results[key] = compute()
            if path is not None:
                atomic_write_json(path, self._results[key])
        return self._results[key]

    # ------------------------------------------------------------------ inputs
    def test_sets(self):
        if self._tests is None:
            s, started = self.settings, time.monotonic()
            self._tests = (
                individual_test_set(s.individual, s.resolution, lambda d, t: self.report("test set: individual", d, t)),
                video_test_set(s.video_orbits, s.video_frames, s.resolution, lambda d, t: self.report("test set: video", d, t)))
            self._timed("test_sets", started)
        return self._tests

    def branch(self, count: int):
        """The semantic branch trained on the first `count` annotations (cached as checkpoints)."""
        if count in self._branches:
            return self._branches[count]
        if self.project_branch is not None and count == len(self.annotations):
            self._branches[count] = self.project_branch
            return self.project_branch
        from core.semantic import SemanticBranch, train_semantic

        started = time.monotonic()
        torch.manual_seed(count)
        branch = SemanticBranch.for_generator(self.backbone.generator, NUM_CLASSES)
        checkpoints = self.work / f"semantic-a{count}" if self.work else None
        if checkpoints is not None:
            checkpoints.mkdir(parents=True, exist_ok=True)
        stage = f"semantic branch on {count} annotations"
        train_semantic(branch, self.backbone, self.annotations[:count], self.settings.semantic_steps,
                       progress=lambda p: self.report(stage, p.step, p.total_steps), should_stop=self.should_stop,
                       checkpoint_dir=checkpoints, resume=checkpoints is not None)
        self._check_stop()
        self._timed("semantic_branches", started)
        self._branches[count] = branch.eval()
        return self._branches[count]

    def generated(self, count: int, pairs: int) -> PairSet:
        """`pairs` factory pairs labelled by the branch of `count` annotations (a --dataset for the full count)."""
        if self.dataset is not None and count == self.full:
            if pairs > len(self.dataset):
                raise ValueError(f"the dataset holds {len(self.dataset)} pairs; {pairs} were asked for")
            return self.dataset.first(pairs)
        per_chunk = self.settings.identities_per_chunk * self.settings.views_per_identity
        chunks = math.ceil(pairs / per_chunk)
        have = self._generated.get(count)
        if have is None or len(have) < pairs:
            have = PairSet.concatenate([self._chunk(count, index) for index in range(chunks)])
            self._generated[count] = have
        return have.first(pairs)

    def _chunk(self, count: int, index: int) -> PairSet:
        s = self.settings
        first, identities = index * s.identities_per_chunk, s.identities_per_chunk
        name = f"r{s.resolution}-v{s.views_per_identity}-identities-{first:06d}-{first + identities:06d}.npz"
        path = self.work / f"generated-a{count}" / name if self.work else None
        if path is not None and path.exists():
            return _load_pairs(path)
        self._check_stop()
        started = time.monotonic()
        seeds = generation_seeds(identities, first)
        stage = f"generating pairs (branch of {count} annotations), chunk {index + 1}"
        chunk = generate_identities(self.backbone, self.branch(count), seeds, s.resolution,
                                    s.views_per_identity, lambda d, t: self.report(stage, d, t),
                                    self.should_stop, s.cloud_alpha_threshold)
        self._check_stop()
        if path is not None:
            _save_pairs(path, chunk)
        self._timed("generation", started)
        return chunk

    def datasetgan_labels(self, count: int, pairs: PairSet) -> np.ndarray:
        if (pairs.seeds < 0).any():
            raise ValueError("the DatasetGAN baseline needs the seed of every generated image "
                             "(cameras.json / manifest.json of the dataset name none)")
        folder = self.work / f"datasetgan-a{count}" if self.work else None
        path = folder / f"labels-{len(pairs)}.npy" if folder else None
        # Pair sets are prefixes of one sequence, so labels of a longer one serve a shorter one.
        for done in sorted(folder.glob("labels-*.npy")) if folder and folder.is_dir() else []:
            labels = np.load(done, mmap_mode="r")
            if len(labels) >= len(pairs):
                return np.array(labels[:len(pairs)])
        started = time.monotonic()
        if count not in self._ensembles:
            stage = f"DatasetGAN pixel classifier on {count} annotations"
            self._ensembles[count] = train_pixel_ensemble(
                self.backbone, self.annotations[:count], NUM_CLASSES, self.settings.resolution,
                self.settings.pixel_classifier, lambda d, t: self.report(stage, d, t), self.should_stop)
        labels = label_pairs(self._ensembles[count], self.backbone, pairs.seeds, pairs.camera_labels,
                             lambda d, t: self.report("DatasetGAN labels", d, t))
        if path is not None:
            buffer = io.BytesIO()
            np.save(buffer, labels)
            atomic_write_bytes(path, buffer.getvalue())
        self._timed("datasetgan", started)
        return labels

    # ------------------------------------------------------------------ experiments
    def segmenter_result(self, arm: str, count: int, pairs: int | None) -> dict:
        s = self.settings
        key = (f"segmenter-{arm}-a{count}" + (f"-n{pairs}" if pairs is not None else "")
               + f"-r{s.resolution}-s{s.segmenter.steps}")
        return self._cached_result(key, lambda: self._train_and_test(arm, count, pairs))

    def _training_pairs(self, arm: str, count: int, pairs: int | None):
        if arm == "annotations_only":
            data = annotation_pairs(self.backbone, self.annotations[:count], self.settings.resolution,
                                    lambda d, t: self.report("annotation renders", d, t))
            return data.images, data.labels
        data = self.generated(count, pairs)
        if arm == "datasetnerf":
            return data.images, data.labels
        if arm == "datasetgan":
            return data.images, self.datasetgan_labels(count, data)
        raise ValueError(f"unknown arm {arm!r}")

    def _train_and_test(self, arm: str, count: int, pairs: int | None) -> dict:
        images, labels = self._training_pairs(arm, count, pairs)
        individual, video = self.test_sets()
        started = time.monotonic()
        stage = f"segmenter: {arm}, {count} annotations" + (f", {pairs} pairs" if pairs else "")
        settings = replace(self.settings.segmenter, flip_table=mirror_label_ids())
        trained = train_segmenter(images, labels, NUM_CLASSES, settings,
                                  lambda p: self.report(stage, p.step, p.total_steps), self.should_stop)
        self._check_stop()
        self._timed("segmenter_training", started)
        return {"arm": arm, "annotations": count, "pairs": int(len(images)), "train_seconds": trained.seconds,
                "steps": trained.steps, "final_loss": trained.history[-1][1] if trained.history else None,
                "individual": segmentation_figures(predict(trained.model, individual.images), individual.labels, CLASS_NAMES),
                "video": segmentation_figures(predict(trained.model, video.images), video.labels, CLASS_NAMES)}

    def label_quality(self, pairs: int) -> dict:
        """The generated labels themselves against procedural truth, on the first `pairs` images.

        Factory identities are 'evaluate' seeds by default, so each generated image has a
        procedural twin: the same seed seen through the same camera. Both label sources label the
        very same images, so this isolates what 3D-aware labels add over 2D-feature labels.
        """
        def compute():
            data = self.generated(self.full, pairs)
            if not all(purpose_of_seed(int(seed)) == "evaluate" for seed in data.seeds):
                return {"skipped": "the generated identities are not 'evaluate' seeds, so their procedural twins "
                                   "are not held out (a factory dataset's default identities are)"}
            truth = np.stack([ProceduralHead(HeadParams.from_seed(int(seed))).render(label, s.resolution,
                                                                                      background=TEST_BACKGROUND)["labels"]
                              for seed, label in zip(data.seeds, data.camera_labels)])
            result = {"pairs": int(len(truth)),
                      "datasetnerf": segmentation_figures(data.labels, truth, CLASS_NAMES)}
            if "datasetgan" in s.arms:
                result["datasetgan"] = segmentation_figures(self.datasetgan_labels(self.full, data), truth, CLASS_NAMES)
            return result
        s = self.settings
        return self._cached_result(f"label-quality-a{self.full}-n{pairs}-r{s.resolution}", compute)

    def pointnet_result(self, clouds: int, test) -> dict:
        def compute():
            points, labels = self._training_clouds(clouds)
            started = time.monotonic()
            stage = f"PointNet on {clouds} clouds"
            model, seconds = train_pointnet(list(zip(points, labels)), NUM_CLASSES, self.settings.pointnet,
                                            lambda d, t, _loss: self.report(stage, d, t), self.should_stop)
            self._check_stop()
            self._timed("pointnet_training", started)
            figures = point_figures(model, test.points, test.labels, CLASS_NAMES)
            return {"clouds": clouds, "train_seconds": seconds, "training_points": int(sum(map(len, points))),
                    "test": figures}
        key = f"pointnet-a{self.full}-c{clouds}-r{self.settings.resolution}-s{self.settings.pointnet.steps}"
        return self._cached_result(key, compute)

    def _training_clouds(self, clouds: int):
        if self.dataset_clouds is not None:
            points, labels = self.dataset_clouds
            if clouds > len(points):
                raise ValueError(f"the dataset holds {len(points)} point clouds; {clouds} were asked for")
            return points[:clouds], labels[:clouds]
        data = self.generated(self.full, clouds * self.settings.views_per_identity)
        return data.cloud_points[:clouds], data.cloud_labels[:clouds]

    # ------------------------------------------------------------------ the whole table
    def run(self) -> dict:
        s, started = self.settings, time.monotonic()
        largest = max(s.pairs)
        results: dict = {"settings": s.describe(), "annotations_available": len(self.annotations),
                         "source": "dataset" if self.dataset is not None else "in-process factory"}
        individual, video = self.test_sets()
        results["test_sets"] = {"individual": {"images": len(individual), "seeds": [individual.seeds[0], individual.seeds[-1]]},
                                "video": {"images": len(video), "orbits": s.video_orbits, "frames": s.video_frames,
                                          "seeds": sorted(set(video.seeds))}}
        if "main" in s.parts:
            results["main"] = {arm: self.segmenter_result(arm, self.full, None if arm == "annotations_only" else largest)
                               for arm in ARMS if arm in s.arms}
        if "main" in s.parts:
            results["label_quality"] = self.label_quality(min(s.label_quality_pairs, largest))
        if "pairs" in s.parts:
            results["pairs_scale"] = [self.segmenter_result(arm, self.full, n)
                                      for n in sorted(s.pairs) for arm in ("datasetnerf", "datasetgan") if arm in s.arms]
        if "annotations" in s.parts:
            # DatasetNeRF's Table 5 (the factory arm), and the annotations alone at the same counts.
            results["annotations_scale"] = [
                self.segmenter_result(arm, k, None if arm == "annotations_only" else s.annotation_scale_pairs)
                for k in self.annotation_counts for arm in ("datasetnerf", "annotations_only") if arm in s.arms]
        if "pointclouds" in s.parts:
            test = point_cloud_test_set(s.test_clouds, resolution=s.resolution,
                                        progress=lambda d, t: self.report("test set: point clouds", d, t))
            results["pointclouds"] = {"test_clouds": len(test.points), "test_seeds": test.seeds,
                                      "results": [self.pointnet_result(c, test) for c in sorted(s.clouds)]}
        self._timed("total", started)
        results["timings_s"] = {name: round(value, 1) for name, value in self.timings.items()}
        return results


def _save_pairs(path: Path, pairs: PairSet) -> None:
    offsets = np.cumsum([0] + [len(p) for p in pairs.cloud_points])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=pairs.images, labels=pairs.labels, seeds=pairs.seeds,
                        camera_labels=pairs.camera_labels, cloud_offsets=offsets,
                        cloud_points=np.concatenate(pairs.cloud_points) if pairs.cloud_points else np.zeros((0, 3), np.float32),
                        cloud_labels=np.concatenate(pairs.cloud_labels) if pairs.cloud_labels else np.zeros(0, np.uint8))
    atomic_write_bytes(path, buffer.getvalue())


def _load_pairs(path: Path) -> PairSet:
    with np.load(path) as data:
        offsets = data["cloud_offsets"]
        points = [data["cloud_points"][a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        labels = [data["cloud_labels"][a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        return PairSet(data["images"], data["labels"], data["seeds"], data["camera_labels"], points, labels)
