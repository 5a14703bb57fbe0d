"""One rank of the distributed tests: ``workflow.training.torchrun.main`` with instruments around it.

After every optimizer step it gathers the model's and the weighting's parameters from all ranks and
records the largest difference to rank 0; it counts checkpoint writes; at the end it compares the
weighting's whole state across ranks. Each rank writes ``<report_dir>/rank<R>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from workflow.training import torchrun as distributed
from mtl_models.trainer import trainer as trainer_module

REPORT = Path(os.environ["DDP_TEST_REPORT_DIR"])
state = {"step_max_diff": [], "checkpoint_writes": 0, "weighting_max_diff": None, "n_ranks_seen": 0}


def _max_diff_to_rank0(flat: torch.Tensor) -> float:
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, flat.contiguous())
    return max(float((p - parts[0]).abs().max()) for p in parts)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().float().reshape(-1).cpu() for t in tensors])


_init = trainer_module.MTLTrainer.__init__


def _instrumented_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    step = self.optimizer.step

    def checked_step(*a, **k):
        out = step(*a, **k)
        params = list(self.model.parameters()) + list(self.weighting.parameters())
        state["step_max_diff"].append(_max_diff_to_rank0(_flat(params)))
        return out

    self.optimizer.step = checked_step
    fit = self.fit

    def fit_then_compare(*a, **k):
        out = fit(*a, **k)
        state["weighting_max_diff"] = _max_diff_to_rank0(_flat(self.weighting.state_dict().values()))
        state["n_ranks_seen"] = dist.get_world_size()
        state["weighting"] = {k: v.tolist() for k, v in self.weighting.state_dict().items()}
        return out

    self.fit = fit_then_compare


_save, _link = trainer_module.save_checkpoint, trainer_module.link_checkpoint


def _counted_save(*args, **kwargs):
    state["checkpoint_writes"] += 1
    return _save(*args, **kwargs)


def _counted_link(*args, **kwargs):  # best.pt: the best epoch's last.pt, linked
    state["checkpoint_writes"] += 1
    return _link(*args, **kwargs)


trainer_module.MTLTrainer.__init__ = _instrumented_init
trainer_module.save_checkpoint = _counted_save
trainer_module.link_checkpoint = _counted_link

if __name__ == "__main__":
    rank = int(os.environ["RANK"])
    try:
        distributed.main(sys.argv[1:])
    finally:
        REPORT.mkdir(parents=True, exist_ok=True)
        (REPORT / f"rank{rank}.json").write_text(json.dumps(state))
