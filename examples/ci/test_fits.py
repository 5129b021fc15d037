"""A user's test with budgetplan's pytest plugin: runs once per profile listed in
pyproject.toml (or every shipped profile when none is):

    [tool.pytest.ini_options]
    budgetplan_devices = ["cortex-m7", "cortex-m4"]
"""

import torch
from torchvision.models import mobilenet_v2

from budgetplan.testing import assert_fits


def test_the_model_fits_every_board(budgetplan_device):
    model = mobilenet_v2(width_mult=0.35, num_classes=10)
    assert_fits(model, budgetplan_device, torch.zeros(1, 3, 128, 128), min_trained=0.05)
