"""Concealment: a lost cell with received neighbours takes their mean, received cells never change,
and interleaved slices leave every lost cell concealable."""

from __future__ import annotations

import numpy as np
import torch

from revqom_nodes.codec.conceal import conceal, concealed_valid
from revqom_nodes.codec.slices import cell_order


def test_lost_cells_take_the_mean_of_their_received_neighbours() -> None:
    torch.manual_seed(0)
    quantized = torch.randn(2, 3, 5, 6)
    valid = torch.ones(2, 5, 6, dtype=torch.bool)
    valid[0, 2, 3] = False  # one lost cell, all 8 neighbours received
    valid[0, 0, 0] = valid[0, 0, 1] = valid[0, 1, 0] = False  # (0, 0): one received neighbour left
    valid[1] = False
    valid[1, 4, 5] = True  # one received cell: its neighbours are concealed, the rest stay missing
    filled, kept = conceal(quantized, valid)
    received = valid.unsqueeze(1).expand_as(quantized)
    torch.testing.assert_close(filled[received], quantized[received])
    neighbours = quantized[0, :, 1:4, 2:5].sum(dim=(1, 2)) - quantized[0, :, 2, 3]
    torch.testing.assert_close(filled[0, :, 2, 3], neighbours / 8)
    torch.testing.assert_close(filled[0, :, 0, 0], quantized[0, :, 1, 1])  # its only received neighbour
    assert torch.equal(kept, concealed_valid(valid))
    assert kept[0].all()
    assert kept[1].sum() == 4 and kept[1, 3:, 4:].all()
    assert torch.equal(filled[1, :, 3, 4], quantized[1, :, 4, 5])
    assert not filled[1, :, :3].any()  # no received neighbour: still zero, still missing


def test_an_all_received_map_is_unchanged() -> None:
    quantized = torch.randn(1, 4, 3, 3)
    filled, kept = conceal(quantized, torch.ones(1, 3, 3, dtype=torch.bool))
    assert torch.equal(filled, quantized) and kept.all()


def test_interleaved_slice_loss_leaves_every_lost_cell_concealable() -> None:
    """Losing one slice of 90 cells of a 20 x 30 map: row-major loses 3 whole rows, and cells with
    no received neighbour stay missing; interleave 2 leaves only scattered cells, all concealed."""
    height, width, cells = 20, 30, 90
    for interleave, expect_all in ((1, False), (2, True)):
        order = cell_order(height, width, interleave)
        for first in range(0, height * width, cells):
            valid = np.ones(height * width, dtype=bool)
            valid[order[first : first + cells]] = False
            kept = concealed_valid(torch.from_numpy(valid.reshape(1, height, width)))
            assert bool(kept.all()) == expect_all
