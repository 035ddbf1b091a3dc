"""The data factory (design.md §4): labelled images, depth, cameras and labelled point clouds."""
from core.factory.pointcloud import PointCloud, backproject, fuse_identity_views, fuse_views, read_ply, voxel_downsample, write_ply
from core.factory.dataset import DatasetError, FactoryDataset
from core.factory.views import IdentityViews, render_identity_views

__all__ = ["DatasetError", "FactoryDataset", "PointCloud", "backproject", "fuse_identity_views", "fuse_views", "read_ply", "voxel_downsample",
           "write_ply", "IdentityViews", "render_identity_views"]
