"""A wall-clock-budgeted nnU-Net v2 trainer (copied into nnU-Net's trainer folder by the benchmark).

nnU-Net finds trainer classes by name under ``nnunetv2/training/nnUNetTrainer/``, so
``nnunet_side.install_trainer`` copies this file there as ``nnUNetTrainer_TimeBudget.py``. It is
imported only inside the benchmark's own nnU-Net virtual environment, never by ``lofihippseg``.

Everything else is nnU-Net's default trainer. The differences, all set by environment variables:

- ``LOFI_NNUNET_BUDGET_MINUTES``: training wall-clock budget (from the start of ``run_training``,
  data-loader start-up and per-epoch validation included). After each epoch the number of epochs
  that fit the budget is re-estimated from the mean epoch time so far, and the poly learning-rate
  schedule is stretched or shrunk to end exactly there: the run ends at a low learning rate, as
  nnU-Net's own schedule does, instead of being cut off mid-schedule.
- ``LOFI_NNUNET_ITERS_PER_EPOCH`` (default 250) / ``LOFI_NNUNET_VAL_ITERS`` (default 50): epoch
  length; the benchmark shortens epochs on CPU so the budget check is fine-grained.
- ``LOFI_NNUNET_MAX_EPOCHS`` (default 1000, nnU-Net's default): upper bound on epochs.
- ``OMP_NUM_THREADS``: when set, the trainer uses that many threads (nnU-Net's CPU path sets
  all cores), so both methods of the benchmark train with the same number of threads.
- ``LOFI_NNUNET_FINAL_VALIDATION`` (default ``0``): nnU-Net's final validation predicts the whole
  validation fold (for fold ``all``: every training case). The benchmark predicts the held-out test
  cases itself, so this is skipped unless set to ``1``.
"""

from __future__ import annotations

import os
from time import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


class nnUNetTrainer_TimeBudget(nnUNetTrainer):  # noqa: N801 - nnU-Net finds trainers by this name
    """nnU-Net's default trainer, stopped (with a completed LR schedule) at a wall-clock budget."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = 60.0 * _env_float("LOFI_NNUNET_BUDGET_MINUTES", 1e9)
        self.num_iterations_per_epoch = int(_env_float("LOFI_NNUNET_ITERS_PER_EPOCH", 250))
        self.num_val_iterations_per_epoch = int(_env_float("LOFI_NNUNET_VAL_ITERS", 50))
        self.num_epochs = int(_env_float("LOFI_NNUNET_MAX_EPOCHS", 1000))
        self.max_epochs = self.num_epochs

    def run_training(self) -> None:
        if os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        start = time()
        self.on_train_start()
        done = 0
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [
                self.train_step(next(self.dataloader_train))
                for _ in range(self.num_iterations_per_epoch)
            ]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [
                    self.validation_step(next(self.dataloader_val))
                    for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            done += 1
            elapsed = time() - start
            per_epoch = elapsed / done
            fit = int(self.budget_s / per_epoch) if per_epoch > 0 else self.max_epochs
            self.num_epochs = max(self.current_epoch, min(fit, self.max_epochs))
            self.lr_scheduler.max_steps = max(self.num_epochs, 1)
            self.print_to_log_file(
                f"budget: {elapsed:.0f}/{self.budget_s:.0f} s used, {per_epoch:.1f} s/epoch, "
                f"{self.num_iterations_per_epoch / max(per_epoch, 1e-9):.3f} training it/s "
                f"(validation included), "
                f"schedule now {self.num_epochs} epochs"
            )
        self.print_to_log_file(
            f"budget: stopped after {done} epochs, {time() - start:.1f} s "
            f"({self.num_iterations_per_epoch} iterations/epoch)"
        )
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if os.environ.get("LOFI_NNUNET_FINAL_VALIDATION", "0") == "1":
            super().perform_actual_validation(save_probabilities)
        else:
            self.print_to_log_file("final validation skipped (LOFI_NNUNET_FINAL_VALIDATION != 1)")
