"""``python -m lstm_c demo``: a one-unit LSTM that remembers day 1 of a stock price.

The example is from StatQuest's video "Long Short-Term Memory (LSTM), Clearly
Explained" (Josh Starmer). Two companies' prices over four days differ only on
day 1 (0 for A, 1 for B); on day 5 A returns to 0 and B to 1. An LSTM with the
video's hand-set weights (below, in PyTorch's gate order) carries day 1 in its
long-term memory c and predicts day 5 as its last output.

The demo first learns such weights: a one-unit `lstm_c.LSTM` from random
weights, trained with its backward pass and a small Adam loop.
"""

from __future__ import annotations

import sys
from typing import NamedTuple, TextIO

import numpy as np

from lstm_c.functional import lstm_forward
from lstm_c.layer import LSTM

# The video's hand-set weights, gates in PyTorch's order i, f, g, o; one input, one hidden unit.
HAND_SET_W_IH = np.array([[1.65], [1.63], [0.94], [-0.19]])
HAND_SET_W_HH = np.array([[2.00], [2.70], [1.41], [4.38]])
HAND_SET_B_IH = np.array([0.62, 1.62, -0.32, 0.59])

SOURCE = 'StatQuest\'s video "Long Short-Term Memory (LSTM), Clearly Explained" (Josh Starmer)'

# Days 1-4 of each company's price and the day-5 value the LSTM should predict.
COMPANIES = {"A": ([0.0, 0.5, 0.25, 1.0], 0.0), "B": ([1.0, 0.5, 0.25, 1.0], 1.0)}

# Training: the initialisation seed, Adam steps and learning rate. With these
# the day-5 errors fall below 0.1 after about 25 steps and to below 0.01 by
# the end (nearby learning rates, 0.03 to 0.1, converge as well).
TRAIN_SEED = 10
TRAIN_STEPS = 300
TRAIN_LR = 0.05


def stock_batch() -> tuple[np.ndarray, np.ndarray]:
    """The two companies as one batch.

    Returns
    -------
    x : ndarray (T=4, B=2, I=1)
        Prices on days 1-4, company A then B.
    target : ndarray (2,)
        Their day-5 values.
    """
    x = np.array([prices for prices, _ in COMPANIES.values()]).T[:, :, None]
    return x, np.array([target for _, target in COMPANIES.values()])


class Training(NamedTuple):
    """Result of `train_stock_lstm`."""

    model: LSTM  # the trained one-unit LSTM, in eval mode
    losses: np.ndarray  # (steps + 1,): mean squared day-5 error before each step and after the last
    predictions: np.ndarray  # (steps + 1, 2): day-5 predictions for A and B at the same moments


def train_stock_lstm(seed: int = TRAIN_SEED, steps: int = TRAIN_STEPS, lr: float = TRAIN_LR) -> Training:
    """Train a one-unit LSTM from random weights to predict day 5 of both companies.

    The loss is the mean squared error of the last output (day 4's h, the
    prediction for day 5) against the day-5 values; gradients come from
    `LSTM.backward` and Adam (beta1 0.9, beta2 0.999) updates the parameters
    in place.

    Parameters
    ----------
    seed : int
        Seed of the random initialisation (uniform ±1, as PyTorch's).
    steps : int
        Adam steps.
    lr : float
        Adam's learning rate.
    """
    x, target = stock_batch()
    model = LSTM(1, 1, dtype=np.float64, seed=seed)
    params = model.params
    first = {name: np.zeros_like(p) for name, p in params.items()}
    second = {name: np.zeros_like(p) for name, p in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    losses, predictions = [], []
    for step in range(1, steps + 2):
        y, _ = model(x)
        error = y[-1, :, 0] - target
        losses.append(np.mean(error**2))
        predictions.append(y[-1, :, 0])
        if step > steps:
            break
        dy = np.zeros_like(y)
        dy[-1, :, 0] = 2 * error / error.size  # d(mean squared error)/dy
        model.backward(dy)
        for name, p in params.items():
            g = model.grads[name]
            first[name] = beta1 * first[name] + (1 - beta1) * g
            second[name] = beta2 * second[name] + (1 - beta2) * g * g
            m_hat = first[name] / (1 - beta1**step)
            v_hat = second[name] / (1 - beta2**step)
            p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return Training(model.eval(), np.array(losses), np.array(predictions))


def hand_set_memories() -> tuple[np.ndarray, np.ndarray]:
    """Run both companies through the hand-set weights as one batch, one day at a time.

    Returns
    -------
    h, c : ndarray (4, 2)
        Short- and long-term memory after each day, per company; h is also
        the output, so h[-1] predicts day 5.
    """
    x = stock_batch()[0]
    state = (np.zeros((2, 1)), np.zeros((2, 1)))
    hs, cs = [], []
    for day in range(x.shape[0]):
        _, h, c, _ = lstm_forward(
            x[day : day + 1], HAND_SET_W_IH, HAND_SET_W_HH, HAND_SET_B_IH, None, *state, training=False
        )
        state = (h, c)
        hs.append(h[:, 0])
        cs.append(c[:, 0])
    return np.array(hs), np.array(cs)


def _fmt(value: float, decimals: int) -> str:
    """`value` rounded, without a minus sign on zero."""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def run_training(out: TextIO = sys.stdout) -> Training:
    """Train from random weights and print the progress and the day-5 predictions."""
    result = train_stock_lstm()
    print(
        f"Training a one-unit LSTM from random weights (seed {TRAIN_SEED}) with lstm_c's "
        f"backward pass and Adam (lr {TRAIN_LR}):",
        file=out,
    )
    print("  step  mean sq. error  day 5 A  day 5 B", file=out)
    for step in range(0, TRAIN_STEPS + 1, 50):
        a, b = result.predictions[step]
        print(f"  {step:>4}  {result.losses[step]:14.6f}  {_fmt(a, 3):>7}  {_fmt(b, 3):>7}", file=out)
    (a, b), (target_a, target_b) = result.predictions[-1], stock_batch()[1]
    print(
        f"Trained: day 5 predicted {_fmt(a, 2)} for company A (target {target_a}) and {_fmt(b, 2)} "
        f"for company B (target {target_b})",
        file=out,
    )
    sd = result.model.state_dict()
    print(
        f"  learned weights (gates i, f, g, o): w_ih = {sd['weight_ih_l0'][:, 0].round(2).tolist()}  "
        f"w_hh = {sd['weight_hh_l0'][:, 0].round(2).tolist()}  "
        f"b_ih + b_hh = {(sd['bias_ih_l0'] + sd['bias_hh_l0']).round(2).tolist()}\n",
        file=out,
    )
    return result


def run(out: TextIO = sys.stdout) -> None:
    """Train from random weights, then print the hand-set weights' memories day by day."""
    run_training(out)
    h, c = hand_set_memories()
    print(f"Hand-set weights from {SOURCE} (gates i, f, g, o):", file=out)
    print(
        f"  w_ih = {HAND_SET_W_IH[:, 0].tolist()}  w_hh = {HAND_SET_W_HH[:, 0].tolist()}  "
        f"b_ih = {HAND_SET_B_IH.tolist()}",
        file=out,
    )
    for k, (name, (prices, target)) in enumerate(COMPANIES.items()):
        print(f"\nCompany {name}: prices {prices}, day 5 should be {target}", file=out)
        print("  day  input  long-term c  short-term h", file=out)
        for day, price in enumerate(prices):
            print(f"  {day + 1:>3}  {price:5.2f}  {c[day, k]:11.4f}  {h[day, k]:12.4f}", file=out)
        print(f"  prediction for day 5: {h[-1, k]:.2f} (target {target})", file=out)
