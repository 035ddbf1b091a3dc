"""A factory dataset as downstream training pairs (the reader itself: core.factory.FactoryDataset)."""
from __future__ import annotations

import numpy as np

from core.downstream.sources import PairSet
from core.factory.dataset import DatasetError, FactoryDataset


def read_pairs(folder, resolution: int | None = None, limit: int | None = None) -> PairSet:
    """Images, labels, cameras and seeds of a factory dataset, resized to `resolution` if given."""
    dataset = FactoryDataset(folder, size=resolution, limit=limit)
    images, labels = zip(*(dataset.image_and_label(index) for index in range(len(dataset))))
    records = dataset.records
    return PairSet(np.stack(images), np.stack(labels), np.asarray([r.seed for r in records], np.int64),
                   np.stack([r.camera_label for r in records]))


def read_point_clouds(folder, limit: int | None = None) -> tuple[list, list]:
    """(points list, labels list) of pointclouds/*.ply in name order."""
    from pathlib import Path

    from core.factory import read_ply

    paths = sorted((Path(folder) / "pointclouds").glob("*.ply"))[:limit]
    points, labels = [], []
    for path in paths:
        try:
            cloud = read_ply(path)
        except (OSError, ValueError) as error:
            raise DatasetError(f"{path}: {error}") from error
        points.append(cloud.points)
        labels.append(cloud.labels)
    return points, labels
