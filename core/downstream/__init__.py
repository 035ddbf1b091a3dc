"""Downstream evaluation (DatasetNeRF §5): segmenters trained on factory output against baselines.

    python main.py evaluate downstream --json [--quick] [--project DIR] [--dataset DIR] [--work DIR]

segnet.py / training.py   the DeepLabV3-style segmenter and its training loop
pointnet.py               the PointNet-style part segmenter for labelled point clouds
testsets.py               procedural test sets of reserved 'evaluate' identities
sources.py / dataset.py   training pairs: annotations, in-process factory output, a factory folder
datasetgan.py             the 2D pixel-classifier baseline on synthesis features
evaluate.py / cli.py      the whole table (resumable through a work folder) and its command
"""
