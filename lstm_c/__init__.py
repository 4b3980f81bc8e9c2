"""lstm_c: batched LSTM forward and backward passes on the CPU.

Cython kernels with OpenMP loops and BLAS from SciPy; PyTorch's gate order
(i, f, g, o) and parameter layout. `lstm_c.reference` is the plain-NumPy
oracle with the same functional API.
"""

from importlib.metadata import PackageNotFoundError, version

from lstm_c import interop, reference
from lstm_c._lstm import openmp_enabled
from lstm_c._threads import get_num_threads, set_num_threads
from lstm_c._types import CheckpointCache, LSTMCache, LSTMGrads
from lstm_c.frozen import FrozenLSTM
from lstm_c.functional import lstm_backward, lstm_forward
from lstm_c.layer import LSTM

try:
    __version__ = version("lstm_c")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "LSTM",
    "FrozenLSTM",
    "CheckpointCache",
    "LSTMCache",
    "LSTMGrads",
    "lstm_backward",
    "lstm_forward",
    "get_num_threads",
    "interop",
    "openmp_enabled",
    "reference",
    "set_num_threads",
    "__version__",
]
