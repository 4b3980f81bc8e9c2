"""DistributedDataParallel over lstm_c.torch.LSTM: one process on the whole batch, then two gloo
ranks on this machine, each on half of it. Run by tests/test_torch_module.py as

    GLOO_SOCKET_IFNAME=lo python torch_ddp_worker.py OUT_DIR

which writes OUT_DIR/initial.pt, single.pt, rank0.pt and rank1.pt (the parameters). The ranks
meet through a file in OUT_DIR (no port to choose, so none to collide with), then gloo
connects them over the loopback interface.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.utils.rnn import pack_padded_sequence

from lstm_c.torch import LSTM

WORLD, BATCH, STEPS, T, I, H, CLASSES = 2, 8, 3, 7, 4, 8, 5


class Tagger(torch.nn.Module):
    """A two-layer bidirectional lstm_c LSTM and a linear head, over packed sequences."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3, dtype=torch.float64)
        self.head = torch.nn.Linear(6, CLASSES, dtype=torch.float64)

    def forward(self, packed: torch.nn.utils.rnn.PackedSequence) -> torch.Tensor:
        out, _ = self.lstm(packed)
        return self.head(out.data)


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, T, I, dtype=torch.float64, generator=g)
    lengths = torch.randint(1, T + 1, (BATCH,), generator=g)
    targets = torch.randint(0, CLASSES, (BATCH, T), generator=g)
    return x, lengths, targets


def train(model: torch.nn.Module, rows: slice) -> None:
    """SGD steps on the rows `rows` of the global batch; the loss is the mean over those rows."""
    x, lengths, targets = data()
    x, lengths, targets = x[rows], lengths[rows], targets[rows]
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    packed_targets = pack_padded_sequence(targets, lengths, batch_first=True, enforce_sorted=False).data
    # Each row weighs the same however long it is: the per-row mean over its steps, then the mean
    # over rows, so that the mean of the two halves' losses is the whole batch's loss.
    per_row = torch.zeros(len(lengths), dtype=torch.float64)
    row_of = pack_padded_sequence(
        torch.arange(len(lengths))[:, None].expand(-1, T), lengths, batch_first=True, enforce_sorted=False
    ).data
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(STEPS):
        opt.zero_grad()
        losses = torch.nn.functional.cross_entropy(model(packed), packed_targets, reduction="none")
        loss = (per_row.index_add(0, row_of, losses) / lengths).mean()
        loss.backward()
        opt.step()


def rank_main(rank: int, out: Path) -> None:
    torch.set_num_threads(1)
    store = f"file://{(out / 'rendezvous').resolve()}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    model = Tagger()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    half = BATCH // WORLD
    train(ddp, slice(rank * half, (rank + 1) * half))
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    dist.barrier()  # both ranks have saved
    # End here, without tearing down the process group: PyTorch's gloo teardown can deadlock
    # (the main thread joins gloo's worker thread while holding the GIL, which that thread
    # needs to release a Python object); seen on this test once in a few runs.
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Tagger()
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / "initial.pt")
    train(model, slice(0, BATCH))
    torch.save(model.state_dict(), out / "single.pt")
    mp.spawn(rank_main, args=(out,), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
