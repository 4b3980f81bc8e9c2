"""StatQuest's worked example ("Long Short-Term Memory (LSTM), Clearly Explained"): a one-unit
LSTM with hand-set weights remembers day 1 of two companies' stock prices (0 for company A,
1 for B; days 2-4 alike) and predicts day 5 (0 for A, 1 for B). Run through the reference
and the compiled kernels, learnt from random weights by lstm_c.LSTM, and shown by the CLI's
``demo`` command."""

import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import APIS, DTYPES

import lstm_c
from lstm_c._cli.demo import hand_set_memories, stock_batch, train_stock_lstm

# The example's weights in PyTorch's gate order i, f, g, o: one input, one hidden unit.
W_IH = np.array([[1.65], [1.63], [0.94], [-0.19]])
W_HH = np.array([[2.00], [2.70], [1.41], [4.38]])
B_IH = np.array([0.62, 1.62, -0.32, 0.59])
COMPANY_A = [0.0, 0.5, 0.25, 1.0]
COMPANY_B = [1.0, 0.5, 0.25, 1.0]


def run_prices(api, prices, h0=None, c0=None):
    x = np.array(prices, dtype=np.float64).reshape(-1, 1, 1)  # (T, B=1, I=1)
    return api.lstm_forward(x, W_IH, W_HH, B_IH, None, h0, c0)


@APIS
def test_one_step_from_the_examples_state(api):
    y, h_n, c_n, _ = run_prices(api, [1.0], h0=[[1.0]], c0=[[2.0]])
    assert c_n[0, 0] == pytest.approx(2.95, abs=0.005)
    assert h_n[0, 0] == pytest.approx(0.99, abs=0.005)
    assert y[0, 0, 0] == h_n[0, 0]


@APIS
@pytest.mark.parametrize(
    "prices, day1_c, day1_h, final",
    [(COMPANY_A, -0.20, -0.13, 0.0), (COMPANY_B, 0.50, 0.28, 0.97)],
    ids=["company_A", "company_B"],
)
def test_each_company_alone(api, prices, day1_c, day1_h, final):
    _, h1, c1, _ = run_prices(api, prices[:1])
    assert abs(c1[0, 0] - day1_c) < 0.01
    assert abs(h1[0, 0] - day1_h) < 0.01
    y, h_n, _, _ = run_prices(api, prices)
    assert y[0, 0, 0] == h1[0, 0]
    assert abs(y[-1, 0, 0] - final) < (0.05 if final == 0.0 else 0.01)
    assert h_n[0, 0] == y[-1, 0, 0]


@APIS
def test_both_companies_in_one_batch_are_each_company_alone(api):
    x = np.array([COMPANY_A, COMPANY_B]).T[:, :, None]  # (T=4, B=2, I=1)
    y, h_n, c_n, _ = api.lstm_forward(x, W_IH, W_HH, B_IH)
    assert abs(y[0, 0, 0] - -0.13) < 0.01
    assert abs(y[0, 1, 0] - 0.28) < 0.01
    assert abs(h_n[0, 0]) < 0.05
    assert abs(h_n[1, 0] - 0.97) < 0.01
    for b, prices in enumerate([COMPANY_A, COMPANY_B]):
        y_alone, _, c_alone, _ = run_prices(api, prices)
        np.testing.assert_allclose(y[:, b], y_alone[:, 0], rtol=1e-14, atol=0)
        np.testing.assert_allclose(c_n[b], c_alone[0], rtol=1e-14, atol=0)


@APIS
@pytest.mark.parametrize("dtype", DTYPES)
def test_company_a_and_b_in_one_batch(api, dtype):
    x = np.array([COMPANY_A, COMPANY_B], dtype).T[:, :, None]
    w = [a.astype(dtype) for a in (W_IH, W_HH, B_IH)]
    y, h_n, c_n, _ = api.lstm_forward(x, *w)
    assert y[-1, 0, 0] == pytest.approx(0.0, abs=0.01)  # company A: day 5 is 0
    assert y[-1, 1, 0] == pytest.approx(0.97, abs=0.005)  # company B: day 5 is 1
    # Day 1 memories, from a one-step run.
    _, h1, c1, _ = api.lstm_forward(x[:1], *w)
    assert c1[:, 0] == pytest.approx([-0.20, 0.50], abs=0.005)
    assert h1[:, 0] == pytest.approx([-0.13, 0.28], abs=0.005)


def test_stepping_day_by_day_equals_one_call():
    # The day-by-day memories of both companies, as the demo computes them.
    h, c = hand_set_memories()
    x = np.array([COMPANY_A, COMPANY_B]).T[:, :, None]
    y, h_n, c_n, _ = lstm_c.lstm_forward(x, W_IH, W_HH, B_IH)
    np.testing.assert_allclose(h, y[:, :, 0], rtol=1e-14)
    np.testing.assert_allclose(c[-1], c_n[:, 0], rtol=1e-14)


# ----------------------------------------------------------------------------- learning the weights


def test_training_from_random_weights_predicts_day_5():
    result = train_stock_lstm()
    x, target = stock_batch()
    assert x.shape == (4, 2, 1)
    np.testing.assert_allclose(result.predictions[-1], target, atol=0.1)
    assert result.losses[-1] < result.losses[0] / 100
    # The trained model, run again (eval mode) and stepped day by day, predicts the same.
    y, _ = result.model(x)
    np.testing.assert_allclose(y[-1, :, 0], result.predictions[-1], rtol=1e-12)
    state = None
    for day in range(4):
        y_t, state = result.model.step(x[day], state)
    np.testing.assert_allclose(y_t[:, 0], result.predictions[-1], rtol=1e-12)
    # Deterministic: the same random seed trains the same weights.
    again = train_stock_lstm()
    np.testing.assert_array_equal(again.losses, result.losses)


@pytest.mark.parametrize("seed", [9, 14, 28])
def test_training_converges_from_other_random_seeds_too(seed):
    result = train_stock_lstm(seed=seed)
    np.testing.assert_allclose(result.predictions[-1], stock_batch()[1], atol=0.1)


# ----------------------------------------------------------------------------- the CLI's demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # Run outside the source tree: `python -m` puts the working directory on sys.path.
    return subprocess.run(
        [sys.executable, "-m", "lstm_c", "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.mktemp("demo"),
        timeout=300,
    )


def test_demo_command_prints_the_memories_and_predictions(demo):
    assert demo.returncode == 0, demo.stderr
    assert "prediction for day 5: 0.01 (target 0.0)" in demo.stdout
    assert "prediction for day 5: 0.97 (target 1.0)" in demo.stdout
    assert "-0.2012" in demo.stdout and "0.4995" in demo.stdout  # day-1 long-term memories


def test_demo_command_trains_first_then_shows_the_hand_set_weights(demo):
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    found = re.search(
        r"Trained: day 5 predicted (-?\d+\.\d+) for company A \(target 0\.0\) and (-?\d+\.\d+) "
        r"for company B \(target 1\.0\)",
        out,
    )
    assert found, out
    assert abs(float(found.group(1)) - 0.0) <= 0.1
    assert abs(float(found.group(2)) - 1.0) <= 0.1
    assert out.index("Training a one-unit LSTM from random weights") < found.start()
    assert found.start() < out.index("Hand-set weights")
