# Type stubs for the compiled kernels (src/_lstm.pyx). Only lstm_c.functional
# calls forward/backward/step, by keyword: every array is C-contiguous, float32
# or float64 (all one dtype), preallocated by lstm_c.functional._workspace; the
# kernels check each one's shape against the call's sizes and write their results
# into them. In the comments: IN read, OUT written, INOUT both, SCRATCH working
# memory; T*B rows in x's layout (see the header of src/_lstm.pyx), P the output
# size (the projection's, else H).

import numpy as np

_Array = np.ndarray

def openmp_enabled() -> bool:
    """Whether this build of lstm_c was compiled with OpenMP."""

def omp_max_threads() -> int:
    """OpenMP's default thread count (follows OMP_NUM_THREADS); 1 without OpenMP."""

def forward(
    *,
    x: _Array,  # IN (T*B, I)
    w_ih: _Array,  # IN (4H, I)
    w_hh: _Array,  # IN (4H, P)
    bias: _Array,  # IN (4H,): b_ih + b_hh
    w_hr: _Array | None,  # IN (P, H), or None without a projection
    peephole: _Array | None,  # IN (3, H), or None
    h: _Array,  # INOUT (B, P): h0 in, h_n out
    c: _Array,  # INOUT (B, H): c0 in, c_n out
    lengths: _Array,  # IN (B,) intp, each in [0, steps]
    reverse: bool,
    batch_first: bool,
    steps: int,  # T
    gates: _Array,  # (T*B, 4H): OUT activations when training, else SCRATCH (chunk*B, 4H)
    y: _Array,  # OUT (T*B, P)
    h_prev: _Array | None,  # OUT (T*B, P) when training, else None
    c_prev: _Array | None,  # OUT (T*B, H) when training, else None
    m_all: _Array | None,  # OUT (T*B, H) when training with a projection, else None
    rec: _Array,  # SCRATCH (B, 4H)
    h_next: _Array | None,  # SCRATCH (B, H) without a projection, else None
    m_step: _Array | None,  # SCRATCH (B, H) with a projection, else None
    proj: _Array | None,  # SCRATCH (B, P) with a projection, else None
    panels: _Array | None,  # SCRATCH packed W_hh (functional._panels; IN when packed), or None for BLAS
    ih_panels: _Array | None,  # SCRATCH packed W_ih (functional._input_panels; IN when packed), or None
    num_threads: int,
    split_batch: bool,  # share the steps by rows of the batch (no barrier per step), not units
    packed: bool = False,  # IN: the panels given already hold the weights packed (pack_weights)
) -> None:
    """Run one layer and direction over the sequence (results written into the outputs)."""

class ForwardPlan:
    """forward made ready for repeated calls: every array but x, h, c and y taken once."""

    def __init__(
        self,
        *,
        w_ih: _Array,  # IN, as forward's
        w_hh: _Array,  # IN
        bias: _Array,  # IN
        w_hr: _Array | None,  # IN
        peephole: _Array | None,  # IN
        lengths: _Array,  # IN
        reverse: bool,
        batch_first: bool,
        steps: int,
        gates: _Array,  # SCRATCH (the plan's own from now on), as forward's in inference
        h_prev: None,  # inference only
        c_prev: None,
        m_all: None,
        rec: _Array,  # SCRATCH
        h_next: _Array | None,  # SCRATCH
        m_step: _Array | None,  # SCRATCH
        proj: _Array | None,  # SCRATCH
        panels: _Array | None,  # SCRATCH, or IN when packed
        ih_panels: _Array | None,  # SCRATCH, or IN when packed
        num_threads: int,
        split_batch: bool,
        packed: bool = False,
    ) -> None: ...
    def run(
        self,
        x: _Array,  # IN (T*B, I)
        h: _Array,  # INOUT (B, P)
        c: _Array,  # INOUT (B, H)
        y: _Array,  # OUT (T*B, P)
    ) -> bool:  # False, having done nothing, while another call runs on the plan
        ...

def backward(
    *,
    x: _Array,  # IN (T*B, I)
    w_ih: _Array,  # IN (4H, I)
    w_hh: _Array,  # IN (4H, P)
    w_hr: _Array | None,  # IN (P, H), or None
    peephole: _Array | None,  # IN (3, H), or None
    act: _Array,  # IN (T*B, 4H): the training forward's gates
    c_prev: _Array,  # IN (T*B, H)
    h_prev: _Array,  # IN (T*B, P)
    m_all: _Array | None,  # IN (T*B, H) with a projection, else None
    lengths: _Array,  # IN (B,) intp
    reverse: bool,
    batch_first: bool,
    steps: int,
    dy: _Array | None,  # IN (T*B, P), or None for zeros
    dh_n: _Array,  # IN (B, P)
    dx: _Array,  # OUT (T*B, I)
    dh0: _Array,  # OUT (B, P)
    dc0: _Array,  # INOUT (B, H): dc_n in, dc0 out
    dw_ih: _Array,  # OUT (4H, I)
    dw_hh: _Array,  # OUT (4H, P)
    db: _Array,  # OUT (4H,)
    dw_hr: _Array | None,  # OUT (P, H) with a projection, else None
    dpeephole: _Array | None,  # OUT (3, H) with peepholes, else None
    dgates: _Array,  # SCRATCH (T*B, 4H)
    dgates_step: _Array,  # SCRATCH (2B, 4H), zeroed
    dh_all: _Array | None,  # SCRATCH (T*B, P) with a projection, else None
    dh_step: _Array | None,  # SCRATCH (B, P) with a projection, else None
    dm_step: _Array | None,  # SCRATCH (B, H) with a projection, else None
    panels: _Array | None,  # SCRATCH packed W_hh columns, or None for BLAS
    ih_panels: _Array | None,  # SCRATCH packed W_ih columns, or None for BLAS
    num_threads: int,
    split_batch: bool,  # as in forward
) -> None:
    """Backpropagate through one layer and direction (gradients written into the outputs)."""

def step(
    *,
    x: _Array,  # IN (B, I)
    w_ih: _Array,  # IN (4H, I)
    w_hh: _Array,  # IN (4H, P)
    bias: _Array,  # IN (4H,)
    w_hr: _Array | None,  # IN (P, H), or None
    peephole: _Array | None,  # IN (3, H), or None
    h0: _Array,  # IN (B, P)
    c: _Array,  # INOUT (B, H): c0 in, the new c out
    h: _Array,  # OUT (B, P)
    gates: _Array,  # SCRATCH (B, 4H)
    rec: _Array,  # SCRATCH (B, 4H)
    m: _Array | None,  # SCRATCH (B, H) with a projection, else None
) -> None:
    """One time step of one layer for streaming inference (results written into the outputs)."""

def inference_chunk_steps(steps: int, batch: int, hidden_size: int, input_size: int, itemsize: int) -> int:
    """Steps per chunk of the input projection in an inference forward (at most `steps`)."""

def set_blas_thread_functions(get_address: int, set_address: int) -> None:
    """Use the BLAS's `int get(void)` and `void set(int)` at these addresses."""

def blas_threads() -> int:
    """The BLAS thread count, through the functions given to set_blas_thread_functions."""

def set_blas_threads(n: int) -> None:
    """Set the BLAS thread count, through the functions given to set_blas_thread_functions."""

def panel_width(dtype_size: int) -> int:
    """Values per packed panel row for this itemsize, or 0 where panels are not built."""

def pack_weights(w: _Array, out: _Array) -> None:
    """Pack every hidden unit of w (4H, K) into out, as forward packs them at every call."""

def set_interrupt_checks(enabled: bool) -> None:
    """Turn the kernels' checks for pending signals (Ctrl-C) on or off; for benchmarking."""

def interrupt_checks() -> bool:
    """Whether the kernels check for pending signals (see set_interrupt_checks)."""

def ensure_threads(n: int) -> None:
    """Check that a team of `n` threads can be created, before OpenMP tries (RuntimeError if not)."""

class Stepper:
    """LSTM.step's compiled plan: every layer bound once, one call per time step."""

    max_batch: int  # the largest batch try_run takes
    split: bool  # whether a team of threads may share a single row's step
    team_steps: int  # single rows' steps (with split) on the team
    alone_steps: int  # and on the calling thread alone
    def __init__(
        self,
        layers: list[tuple[_Array | None, ...]],  # per layer (w_ih, w_hh, b_ih, b_hh, w_hr, peephole)
        input_size: int,
        hidden_size: int,
        output_size: int,
        itemsize: int,  # 4: float32, 8: float64
        max_batch: int = 0,
        split: bool = False,
    ) -> None: ...
    def try_run(
        self, x: object, hx: object, threads: int = 1
    ) -> tuple[_Array, tuple[_Array, _Array]] | None:  # LSTM.step's usual call, or None
        ...
    def run(
        self, x: _Array, h0: _Array | None, c0: _Array | None, h: _Array, c: _Array, threads: int = 1
    ) -> None:  # run_f or run_d by the plan's dtype
        ...
    def run_f(
        self, x: _Array, h0: _Array | None, c0: _Array | None, h: _Array, c: _Array, threads: int = 1
    ) -> None:  # float32: IN x (B, I), h0 (L, B, P), c0 (L, B, H); OUT h (L, B, P), c (L, B, H)
        ...
    def run_d(
        self, x: _Array, h0: _Array | None, c0: _Array | None, h: _Array, c: _Array, threads: int = 1
    ) -> None:  # float64, as run_f
        ...
