"""Fit TinyModule with BudgetPlanCallback under DDP on 2 CPU processes (run by test_ddp.py),
once for each budget given, in the same two processes.

Each rank writes what it trained with to OUT/rank{N}.pt, and the error a fit raised to
OUT/rank{N}.error.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_modules import TinyModule, data

from budgetplan import BudgetPlanCallback


class Record(Callback):
    def __init__(self, budget: BudgetPlanCallback) -> None:
        self.budget = budget
        self.selections: list[dict[str, list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.selections.append({k: v.tolist() for k, v in self.budget.selection.items()})


def fit(out: Path, budget_size: str) -> None:
    pl.seed_everything(0)
    budget = BudgetPlanCallback(device="cortex-m7", budget=budget_size, resample="step", sampler="gradient")
    record = Record(budget)
    trainer = pl.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_epochs=2,
        callbacks=[budget, record],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    module = TinyModule()
    try:
        trainer.fit(module, data(64))
    except Exception as err:  # each rank reports the error it raised
        (out / f"rank{trainer.global_rank}.error").write_text(f"{type(err).__name__}: {err}")
        raise
    torch.save(
        {
            "plan": budget.plan.to_dict(),
            "selections": record.selections,
            "state": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "trainable": sorted(n for n, p in module.named_parameters() if p.requires_grad),
        },
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    for size in sys.argv[2:] or ["3KB"]:
        fit(Path(sys.argv[1]), size)
