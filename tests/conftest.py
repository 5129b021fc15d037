"""Fixtures the tests share, and the test run's settings; helpers are in ``tests/helpers/``."""

from __future__ import annotations

import os

import pytest

from budgetplan.costs.table import CostTable

from .helpers.costs import make_device

if "PYTEST_XDIST_WORKER" in os.environ:
    # one core per worker, for this process and the ones it starts: two workers with a
    # thread per core each would make four threads fight over two cores
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def default_costs_by_executor() -> dict[str, CostTable]:
    """The default model's cost table, traced once per executor model."""
    import torch

    from budgetplan.costs.build import layer_costs
    from budgetplan.zoo.models import build_model

    model, name = build_model()
    example = torch.zeros(1, 3, 128, 128)
    return {
        executor: layer_costs(model, example, make_device(executor=executor), model_name=name)
        for executor in ("layer", "inplace-dw", "patch")
    }


def pytest_configure(config: pytest.Config) -> None:
    if "PYTEST_XDIST_WORKER" in os.environ:
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # the slow tests first, so that the two workers end on short tests together instead of
    # one of them starting a 20 s test while the other has nothing left
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
