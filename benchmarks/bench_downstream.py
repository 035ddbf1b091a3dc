"""Speed of the downstream evaluation's parts (what `evaluate downstream` spends its time on).

    python benchmarks/bench_downstream.py [--resolution 64] [--threads 1] [--repeats 5]

Prints median wall and CPU milliseconds (after one warm-up) for:
  segmenter step       one training step of the DeepLabV3-style segmenter (batch 8)
  segmenter predict    labels of one test image
  pixel labels         the DatasetGAN-style ensemble labelling one view (feature maps of the identity cached)
  feature maps         an identity's upsampled synthesis block features (once per identity)
  pointnet step        one PointNet training step (8 clouds x 1024 points)
  test image           one procedural test render with labels
on the embedded default backbone. CPU time is the steadier figure on a shared machine. Not a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backbone import load_backbone  # noqa: E402
from core.downstream.datasetgan import PixelClassifier, PixelEnsemble, block_feature_maps  # noqa: E402
from core.downstream.pointnet import PointNetSeg  # noqa: E402
from core.downstream.segnet import SegNet, SegNetConfig  # noqa: E402
from core.downstream.testsets import individual_test_set  # noqa: E402
from core.procedural import NUM_CLASSES  # noqa: E402


# tests/test_benchmarks.py runs this benchmark at a tiny size: (arguments, a line the output must match).
SMOKE_RUNS = [(["--resolution", "32", "--repeats", "1"], r"pointnet step +[\d.]+ ms wall")]


def timed_ms(fn, repeats: int) -> tuple[float, float]:
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return 1000 * statistics.median(walls), 1000 * statistics.median(cpus)


def show(name: str, times: tuple[float, float]) -> None:
    print(f"{name:<22}{times[0]:9.1f} ms wall {times[1]:9.1f} ms CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    res = args.resolution

    model = SegNet(SegNetConfig(NUM_CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    images = torch.rand(8, 3, res, res)
    labels = torch.randint(0, NUM_CLASSES, (8, res, res))

    def segmenter_step():
        loss = torch.nn.functional.cross_entropy(model.train()(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    print(f"segmenter: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {res}^2, "
          f"{args.threads} thread(s)")
    show("segmenter step", timed_ms(segmenter_step, args.repeats))
    with torch.no_grad():
        show("segmenter predict", timed_ms(lambda: model.eval()(images[:1]), args.repeats))

    backbone = load_backbone("default")
    identity = backbone.identity_from_seed(900_000)
    show("feature maps", timed_ms(lambda: block_feature_maps(identity, res), args.repeats))
    features = block_feature_maps(identity, res)
    ensemble = PixelEnsemble([PixelClassifier(features.shape[0] + 3, NUM_CLASSES).eval() for _ in range(3)], res)
    camera = backbone.camera(20.0, 5.0).label().numpy()
    show("pixel labels", timed_ms(lambda: ensemble.label_view(None, camera, features), args.repeats))

    pointnet = PointNetSeg(NUM_CLASSES)
    pointnet_optimizer = torch.optim.Adam(pointnet.parameters(), 1e-3)
    points = torch.rand(8, 3, 1024) - 0.5
    point_labels = torch.randint(0, NUM_CLASSES, (8, 1024))

    def pointnet_step():
        loss = torch.nn.functional.cross_entropy(pointnet.train()(points), point_labels)
        pointnet_optimizer.zero_grad()
        loss.backward()
        pointnet_optimizer.step()

    show("pointnet step", timed_ms(pointnet_step, args.repeats))
    show("test image", timed_ms(lambda: individual_test_set(1, res), args.repeats))


if __name__ == "__main__":
    np.random.seed(0)
    main()
