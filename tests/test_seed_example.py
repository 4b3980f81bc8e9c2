"""The demo's stock example (StatQuest's LSTM video), run through the compiled kernels and the CLI."""

import subprocess
import sys

import numpy as np
import pytest

import lstm_c
from lstm_c._cli.demo import HAND_SET_B_IH, HAND_SET_W_HH, HAND_SET_W_IH, hand_set_memories


def test_one_step_from_a_given_state():
    y, h, c, _ = lstm_c.lstm_forward([[[1.0]]], HAND_SET_W_IH, HAND_SET_W_HH, HAND_SET_B_IH, None,
                                     [[1.0]], [[2.0]])
    assert c[0, 0] == pytest.approx(2.95, abs=0.005)
    assert h[0, 0] == pytest.approx(0.99, abs=0.005)
    assert y[0, 0, 0] == h[0, 0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_company_a_and_b_in_one_batch(dtype):
    x = np.array([[0, 0.5, 0.25, 1], [1, 0.5, 0.25, 1]], dtype).T[:, :, None]
    w = [a.astype(dtype) for a in (HAND_SET_W_IH, HAND_SET_W_HH, HAND_SET_B_IH)]
    y, h_n, c_n, _ = lstm_c.lstm_forward(x, *w)
    assert y[-1, 0, 0] == pytest.approx(0.0, abs=0.01)  # company A: day 5 is 0
    assert y[-1, 1, 0] == pytest.approx(0.97, abs=0.005)  # company B: day 5 is 1
    # Day 1 memories, from a one-step run.
    _, h1, c1, _ = lstm_c.lstm_forward(x[:1], *w)
    assert c1[:, 0] == pytest.approx([-0.20, 0.50], abs=0.005)
    assert h1[:, 0] == pytest.approx([-0.13, 0.28], abs=0.005)


def test_stepping_day_by_day_equals_one_call():
    h, c = hand_set_memories()
    x = np.array([[0, 0.5, 0.25, 1], [1, 0.5, 0.25, 1]]).T[:, :, None]
    y, h_n, c_n, _ = lstm_c.lstm_forward(x, HAND_SET_W_IH, HAND_SET_W_HH, HAND_SET_B_IH)
    np.testing.assert_allclose(h, y[:, :, 0], rtol=1e-14)
    np.testing.assert_allclose(c[-1], c_n[:, 0], rtol=1e-14)


def run_cli(args, cwd):
    # Run outside the source tree: `python -m` puts the working directory on sys.path.
    return subprocess.run([sys.executable, "-m", "lstm_c", *args], capture_output=True, text=True, cwd=cwd)


def test_demo_command_prints_the_memories_and_predictions(tmp_path):
    done = run_cli(["demo"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "prediction for day 5: 0.01 (target 0.0)" in done.stdout
    assert "prediction for day 5: 0.97 (target 1.0)" in done.stdout
    assert "-0.2012" in done.stdout and "0.4995" in done.stdout  # day-1 long-term memories


def test_cli_without_a_command_fails_with_usage(tmp_path):
    done = run_cli([], tmp_path)
    assert done.returncode == 2
    assert "usage" in done.stderr


# The example end to end: learn such weights from random ones with our backward pass.


def test_training_from_random_weights_predicts_day_5():
    from lstm_c._cli.demo import stock_batch, train_stock_lstm

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
    # Deterministic: the same seed trains the same weights.
    again = train_stock_lstm()
    np.testing.assert_array_equal(again.losses, result.losses)


@pytest.mark.parametrize("seed", [9, 14, 28])
def test_training_converges_from_other_seeds_too(seed):
    from lstm_c._cli.demo import stock_batch, train_stock_lstm

    result = train_stock_lstm(seed=seed)
    np.testing.assert_allclose(result.predictions[-1], stock_batch()[1], atol=0.1)


def test_demo_command_trains_first_then_shows_the_hand_set_weights(tmp_path):
    import re

    done = run_cli(["demo"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    found = re.search(
        r"Trained: day 5 predicted (-?\d+\.\d+) for company A \(target 0\.0\) and (-?\d+\.\d+) "
        r"for company B \(target 1\.0\)", out
    )
    assert found, out
    assert abs(float(found.group(1)) - 0.0) <= 0.1
    assert abs(float(found.group(2)) - 1.0) <= 0.1
    assert out.index("Training a one-unit LSTM from random weights") < found.start()
    assert found.start() < out.index("Hand-set weights from StatQuest's video")
