"""bdn.tensors: images to (N)CHW tensors and back, and the 8-bit samples write_image stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bdn.errors import BdnError
from bdn.io import read_image, write_image
from bdn.tensors import batch_to_nchw, rounded_to_8bit, to_8bit, to_chw, to_image, to_nchw


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)])
def test_round_trip_keeps_layout_and_values(shape):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    x = to_nchw(image)
    assert x.shape == (1, 1 if len(shape) == 2 else 3, 5, 7) and x.dtype == torch.float32 and x.is_contiguous()
    back = to_image(x)
    assert back.dtype == np.float32 and np.array_equal(back, image)
    assert np.array_equal(to_image(x[0]), image) and np.array_equal(to_image(to_chw(image)), image)
    back[0, 0] = 5.0  # a copy of its own
    assert float(x.flatten()[0]) != 5.0


def test_dtype_is_converted_straight_from_the_source():
    image = np.random.default_rng(1).random((4, 6, 3))  # float64: every digit kept when float64 is asked for
    assert torch.equal(to_chw(image, torch.float64), torch.from_numpy(image).permute(2, 0, 1))
    assert to_chw(image).dtype == torch.float32
    tensor = torch.rand(1, 3, 4, 6)
    assert torch.equal(to_chw(tensor), tensor[0]) and torch.equal(to_chw(tensor[0, 0]), tensor[0, :1])


def test_batches_and_bad_shapes():
    grey, colour = np.zeros((2, 4, 5), np.float32), np.zeros((2, 4, 5, 3), np.float32)
    assert batch_to_nchw(grey).shape == (2, 1, 4, 5) and batch_to_nchw(colour).shape == (2, 3, 4, 5)
    with pytest.raises(BdnError):
        to_chw(np.zeros((1, 2, 3, 4)))
    with pytest.raises(BdnError):
        to_chw(torch.zeros(2, 3, 4, 5))
    with pytest.raises(BdnError):
        batch_to_nchw(np.zeros((4, 5)))


def test_8bit_is_what_write_image_stores(tmp_path):
    # Values a hair either side of the half steps, and outside [0, 1]: numpy and torch round alike.
    values = np.concatenate([(np.arange(256) + 0.5) / 255, np.arange(256) / 255, [-0.2, 1.3, np.nextafter(0.5, 1)]])
    image = values.reshape(1, -1).astype(np.float32)
    write_image(tmp_path / "x.png", image)
    stored, _ = read_image(tmp_path / "x.png")
    assert np.array_equal(to_8bit(image), np.rint(stored * 255).astype(np.uint8))
    assert np.array_equal(to_8bit(torch.from_numpy(image)).numpy(), to_8bit(image))
    assert np.array_equal(rounded_to_8bit(image), stored)
    assert np.array_equal(rounded_to_8bit(torch.from_numpy(image)).numpy(), stored)
