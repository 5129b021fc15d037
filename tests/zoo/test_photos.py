"""The photograph tasks: ten classes, and no region of a photograph in both splits."""

from __future__ import annotations

import pytest
import torch

from budgetplan.zoo.photos import GreyRegions, PhotoRegions, _photo


@pytest.mark.parametrize("task", [PhotoRegions, GreyRegions])
def test_training_and_validation_crops_come_from_disjoint_parts_of_each_photograph(task):
    train, val = task("train", 64, 0, 8), task("val", 64, 0, 8)
    assert len(set(task.names)) == 10 and train.labels.tolist() == sorted(train.labels.tolist())
    assert torch.bincount(train.labels).tolist() == [8] * 10
    for label, name in enumerate(task.names):
        photo, fit, held = _photo(name), train.regions[label], val.regions[label]
        axis = 1 if photo.shape[1] >= photo.shape[2] else 2
        assert torch.equal(torch.cat([fit, held], dim=axis), photo)  # one cut, no overlap
        assert held.shape[axis] == pytest.approx(0.2 * photo.shape[axis], abs=1)


def test_crops_are_fixed_by_the_seed_and_vary_within_a_class():
    first, again, other = (
        PhotoRegions("train", 32, 0, 4),
        PhotoRegions("train", 32, 0, 4),
        PhotoRegions("train", 32, 1, 4),
    )
    assert torch.equal(first[3][0], again[3][0])
    assert not torch.equal(first[3][0], other[3][0])
    assert not torch.equal(first[0][0], first[1][0])
    image, label = first[5]
    assert image.shape == (3, 32, 32) and int(label) == 1


def test_the_tuning_split_cuts_the_training_part_again():
    train = PhotoRegions("train", 32, 0, 8)
    fit, held = train.tuning_split()
    assert torch.bincount(fit.labels).tolist() == [6] * 10 and torch.bincount(held.labels).tolist() == [2] * 10
    for label, name in enumerate(PhotoRegions.names):
        whole, first, rest = train.regions[label], fit.regions[label], held.regions[label]
        photo = _photo(name)
        axis = 1 if photo.shape[1] >= photo.shape[2] else 2  # the photograph's longer side is cut
        assert torch.equal(torch.cat([first, rest], dim=axis), whole)
        assert first.shape[axis] == pytest.approx(0.75 * whole.shape[axis], abs=1)
    with pytest.raises(ValueError, match="span must be"):
        PhotoRegions("train", 32, 0, 8, span=(0.5, 0.5))
