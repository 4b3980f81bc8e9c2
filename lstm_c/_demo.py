"""The seed's worked example: a one-unit LSTM that remembers day 1 of a stock price.

Two companies' prices over four days differ only on day 1 (0 for A, 1 for B);
on day 5 A returns to 0 and B to 1. An LSTM with the hand-set weights below
carries day 1 in its long-term memory c and predicts day 5 as its last output.
"""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

from lstm_c.functional import lstm_forward

# Gates in PyTorch's order i, f, g, o; one input, one hidden unit.
SEED_W_IH = np.array([[1.65], [1.63], [0.94], [-0.19]])
SEED_W_HH = np.array([[2.00], [2.70], [1.41], [4.38]])
SEED_B_IH = np.array([0.62, 1.62, -0.32, 0.59])

# Days 1-4 of each company's price and the day-5 value the LSTM should predict.
COMPANIES = {"A": ([0.0, 0.5, 0.25, 1.0], 0.0), "B": ([1.0, 0.5, 0.25, 1.0], 1.0)}


def seed_memories() -> tuple[np.ndarray, np.ndarray]:
    """Run both companies as one batch, one day at a time.

    Returns
    -------
    h, c : ndarray (4, 2)
        Short- and long-term memory after each day, per company; h is also
        the output, so h[-1] predicts day 5.
    """
    x = np.array([prices for prices, _ in COMPANIES.values()]).T[:, :, None]  # (T=4, B=2, I=1)
    state = (np.zeros((2, 1)), np.zeros((2, 1)))
    hs, cs = [], []
    for day in range(x.shape[0]):
        _, h, c, _ = lstm_forward(x[day : day + 1], SEED_W_IH, SEED_W_HH, SEED_B_IH, None, *state,
                                  training=False)
        state = (h, c)
        hs.append(h[:, 0])
        cs.append(c[:, 0])
    return np.array(hs), np.array(cs)


def run(out: TextIO = sys.stdout) -> None:
    """Print the memories day by day and the day-5 predictions."""
    h, c = seed_memories()
    print("Hand-set weights from the seed documents (gates i, f, g, o):", file=out)
    print(f"  w_ih = {SEED_W_IH[:, 0].tolist()}  w_hh = {SEED_W_HH[:, 0].tolist()}  "
          f"b_ih = {SEED_B_IH.tolist()}", file=out)
    for k, (name, (prices, target)) in enumerate(COMPANIES.items()):
        print(f"\nCompany {name}: prices {prices}, day 5 should be {target}", file=out)
        print("  day  input  long-term c  short-term h", file=out)
        for day, price in enumerate(prices):
            print(f"  {day + 1:>3}  {price:5.2f}  {c[day, k]:11.4f}  {h[day, k]:12.4f}", file=out)
        print(f"  prediction for day 5: {h[-1, k]:.2f} (target {target})", file=out)
