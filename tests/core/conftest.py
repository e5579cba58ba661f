import numpy as np
import pytest
import torch

from keyseg_core.modeling.build import build_model, registry_config


@pytest.fixture(scope="module")
def tiny():
    """(model, processor) of the tiny config, shared within a test module."""
    torch.manual_seed(0)
    return build_model(registry_config("tiny"))


@pytest.fixture
def square_sample():
    """A dark image with one yellow rectangle, and its mask."""
    img = np.full((96, 128, 3), 30, np.uint8)
    img[30:70, 40:100] = (220, 200, 40)
    mask = np.zeros((96, 128), np.uint8)
    mask[30:70, 40:100] = 1
    return img, mask
