"""SECOND-style sparse 3D backbone (spconv), height compression and a light BEV conv block.

Stage order: voxels -> SubMConv3d stem -> ``num_downsamplings`` x [SparseConv3d stride 2
(x, y and z) + SubMConv3d blocks] -> height compression: the sparse features scattered straight
into (B, C3 * D, H, W), channel c3 * D + z (what spconv's ``.dense()`` (B, C3, D, H, W) flattened
gives, without its full channels-last copy) -> 1x1 conv to C -> ``bev_blocks`` 3x3 conv blocks
-> BEV map (B, C, H, W).

spconv's sparse convolutions need ``ConvAlgo.Native`` on the CPU; on CUDA the
default (implicit GEMM) is faster. The algorithm is fixed at construction; the
weight layout is the same for both, so a state dict moves between them.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.voxelize import NUM_POINT_FEATURES, Voxels

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # spconv's use of torch.cuda.amp decorators
    import spconv.pytorch as spconv

SPARSE_CONV_ALGOS: dict[str, spconv.ConvAlgo] = {
    "native": spconv.ConvAlgo.Native,
    "implicit_gemm": spconv.ConvAlgo.MaskImplicitGemm,
}


def sparse_conv_algo(name: str, device: torch.device) -> spconv.ConvAlgo:
    """``"auto"`` -> Native on the CPU, implicit GEMM on CUDA; else one of SPARSE_CONV_ALGOS."""
    if name == "auto":
        return spconv.ConvAlgo.Native if device.type == "cpu" else spconv.ConvAlgo.MaskImplicitGemm
    try:
        return SPARSE_CONV_ALGOS[name]
    except KeyError:
        raise PerceptionError(
            f"unknown sparse_conv_algo {name!r}; valid: {['auto', *SPARSE_CONV_ALGOS]}"
        ) from None


def _sparse_block(conv: nn.Module, channels: int) -> spconv.SparseSequential:
    return spconv.SparseSequential(conv, nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01), nn.ReLU())


class SparseBevBackbone(nn.Module):
    """Voxels of B clouds -> dense BEV maps (B, C, H, W) on ``grid``."""

    def __init__(
        self,
        *,
        grid: BevGrid,
        channels_3d: tuple[int, ...],
        subm_blocks_per_level: int,
        bev_channels: int,
        bev_blocks: int,
        algo: spconv.ConvAlgo,
    ) -> None:
        super().__init__()
        if len(channels_3d) != grid.num_downsamplings + 1:
            raise PerceptionError(
                f"channels_3d needs 1 + log2(bev_stride) = {grid.num_downsamplings + 1} entries "
                f"(stem + one per stride-2 stage), got {channels_3d}"
            )
        if bev_blocks < 0:
            raise PerceptionError(f"bev_blocks must be >= 0, got {bev_blocks}")
        self.grid = grid
        self.algo = algo
        nx, ny, nz = grid.voxel_grid_size
        self.spatial_shape = [nz, ny, nx]

        levels: list[nn.Module] = [
            _sparse_block(
                spconv.SubMConv3d(NUM_POINT_FEATURES, channels_3d[0], 3, padding=1, bias=False,
                                  indice_key="subm0", algo=algo),
                channels_3d[0],
            )
        ]
        depth = nz
        for level in range(1, len(channels_3d)):
            c_in, c_out = channels_3d[level - 1], channels_3d[level]
            layers = [
                _sparse_block(
                    spconv.SparseConv3d(c_in, c_out, 3, stride=2, padding=1, bias=False,
                                        indice_key=f"down{level}", algo=algo),
                    c_out,
                )
            ]
            layers += [
                _sparse_block(
                    spconv.SubMConv3d(c_out, c_out, 3, padding=1, bias=False,
                                      indice_key=f"subm{level}", algo=algo),
                    c_out,
                )
                for _ in range(subm_blocks_per_level)
            ]
            levels.append(spconv.SparseSequential(*layers))
            depth = (depth + 1) // 2
        self.sparse = spconv.SparseSequential(*levels)
        self.height_channels = channels_3d[-1] * depth

        blocks: list[nn.Module] = [
            nn.Conv2d(self.height_channels, bev_channels, 1, bias=False),
            nn.BatchNorm2d(bev_channels, eps=1e-3, momentum=0.01),
            nn.ReLU(),
        ]
        for _ in range(bev_blocks):
            blocks += [
                nn.Conv2d(bev_channels, bev_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(bev_channels, eps=1e-3, momentum=0.01),
                nn.ReLU(),
            ]
        self.bev = nn.Sequential(*blocks)

    def forward(self, voxels: Voxels) -> Tensor:
        """Voxels -> BEV (batch_size, bev_channels, H, W)."""
        features = voxels.features
        if features.device.type == "cpu" and self.algo != spconv.ConvAlgo.Native:
            raise PerceptionError(
                "this backbone was built for CUDA (implicit GEMM); build it with "
                "sparse_conv_algo 'native' or 'auto' on the CPU to run on CPU tensors"
            )
        height, width = self.grid.bev_shape
        if features.shape[0] == 0:
            dense = features.new_zeros(voxels.batch_size, self.height_channels, height, width)
        else:
            x = spconv.SparseConvTensor(features, voxels.coords, self.spatial_shape, voxels.batch_size)
            dense = height_compression(self.sparse(x))
        return self.bev(dense)


def height_compression(x: spconv.SparseConvTensor) -> Tensor:
    """Sparse features (N, C3) at [sample, z, y, x] on a (D, H, W) grid -> dense (B, C3 * D, H, W),
    channel c3 * D + z: ``x.dense().flatten(1, 2)``, scattered directly."""
    depth, height, width = x.spatial_shape
    channels = x.features.shape[1]
    dense = x.features.new_zeros(x.batch_size, channels, depth, height, width)
    sample, z, y, col = x.indices.long().unbind(dim=1)
    dense[sample, :, z, y, col] = x.features
    return dense.flatten(1, 2)
