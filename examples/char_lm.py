"""A character-level language model on the source of a standard-library module, in PyTorch,
with lstm_c's LSTM: ``lstm_c.torch.LSTM`` in place of ``torch.nn.LSTM`` is the only change.

    python examples/char_lm.py                      # lstm_c.torch.LSTM, about a minute
    python examples/char_lm.py --lstm torch         # the same with torch.nn.LSTM
    python examples/char_lm.py --steps 50 --module this

It reads the text of a module that ships with Python (``textwrap`` by default), trains an
embedding, a two-layer LSTM and a linear head with Adam on batches of windows of varying
length (a PackedSequence, so no step is spent on padding), prints the loss in bits per
character as it falls, and then writes a few lines of its own Python in that style.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_c.torch


class CharLM(torch.nn.Module):
    def __init__(self, vocab: int, lstm_class: type, hidden: int = 128) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, 48)
        self.lstm = lstm_class(48, hidden, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, x, hx=None):
        """x: a PackedSequence of character ids, or a (B, T) tensor of them."""
        if isinstance(x, torch.nn.utils.rnn.PackedSequence):
            x = x._replace(data=self.embed(x.data))
            out, hx = self.lstm(x, hx)
            return self.head(out.data), hx
        out, hx = self.lstm(self.embed(x), hx)
        return self.head(out), hx


def batch(ids: torch.Tensor, size: int, longest: int, g: torch.Generator):
    """Random windows of the text, of lengths in [longest/4, longest]: (inputs, targets) packed."""
    lengths = torch.randint(longest // 4, longest + 1, (size,), generator=g)
    starts = torch.randint(0, len(ids) - longest - 1, (size,), generator=g)
    windows = torch.stack([ids[s : s + longest + 1] for s in starts.tolist()])
    pack = lambda t: pack_padded_sequence(t, lengths, batch_first=True, enforce_sorted=False)  # noqa: E731
    return pack(windows[:, :-1]), pack(windows[:, 1:]).data


@torch.no_grad()
def sample(model: CharLM, chars: list[str], prompt: str, length: int, g: torch.Generator) -> str:
    model.eval()
    index = {c: i for i, c in enumerate(chars)}
    x = torch.tensor([[index[c] for c in prompt]])
    logits, hx = model(x)
    out = []
    for _ in range(length):
        probs = torch.softmax(logits[0, -1] / 0.7, dim=-1)
        nxt = int(torch.multinomial(probs, 1, generator=g))
        out.append(chars[nxt])
        logits, hx = model(torch.tensor([[nxt]]), hx)
    model.train()
    return prompt + "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", default="textwrap", help="standard-library module to read (textwrap)")
    parser.add_argument("--lstm", choices=["lstm_c", "torch"], default="lstm_c")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64, help="longest window (64)")
    parser.add_argument("--sample", type=int, default=240, help="characters to write at the end")
    args = parser.parse_args()

    text = inspect.getsource(importlib.import_module(args.module))
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    print(f"{args.module}.py: {len(text)} characters, {len(chars)} distinct")

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    lstm_class = lstm_c.torch.LSTM if args.lstm == "lstm_c" else torch.nn.LSTM
    model = CharLM(len(chars), lstm_class)
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        inputs, targets = batch(ids, args.batch, args.length, g)
        logits, _ = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step == 1 or step % 50 == 0 or step == args.steps:
            bits = loss.item() / math.log(2)
            print(f"step {step:4d}  {bits:.2f} bits/char  {time.perf_counter() - start:5.1f} s", flush=True)
    if args.sample:
        print("--- sampled ---")
        print(sample(model, chars, "def ", args.sample, g))


if __name__ == "__main__":
    main()
