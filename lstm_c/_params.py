"""The parameters of a stacked LSTM: their names, shapes and order (PyTorch's).

Per layer ``k`` and direction (suffix ``_reverse`` for the second):
``weight_ih_l{k}`` (4H, I for k = 0, else D·H_out), ``weight_hh_l{k}`` (4H, H_out),
``bias_ih_l{k}`` and ``bias_hh_l{k}`` (4H,) with biases, ``weight_hr_l{k}``
(P, H) with a projection, ``peephole_l{k}`` (3, H) with peepholes, where
H_out = P with a projection, else H. This module is the only place that
spells these names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "peephole")

_NAME = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|peephole)_l(\d+)(_reverse)?")


class ParamNames(NamedTuple):
    """The names of one layer and direction's parameters (None for those it lacks)."""

    w_ih: str
    w_hh: str
    b_ih: str | None
    b_hh: str | None
    w_hr: str | None
    peephole: str | None


class ParamArrays(NamedTuple):
    """One layer and direction's parameter arrays, in the order of `ParamNames` (None for
    those it lacks)."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray | None
    b_hh: np.ndarray | None
    w_hr: np.ndarray | None
    peephole: np.ndarray | None


def layer_arrays(params: Mapping[str, np.ndarray], names: ParamNames) -> ParamArrays:
    """The arrays of `params` that `names` names."""
    return ParamArrays(
        params[names.w_ih],
        params[names.w_hh],
        None if names.b_ih is None else params[names.b_ih],
        None if names.b_hh is None else params[names.b_hh],
        None if names.w_hr is None else params[names.w_hr],
        None if names.peephole is None else params[names.peephole],
    )


def param_name(kind: str, layer: int, reverse: bool = False) -> str:
    """The name of parameter `kind` (one of `KINDS`) of a layer and direction."""
    return f"{kind}_l{layer}" + ("_reverse" if reverse else "")


def parse_param_name(name: object) -> tuple[str, int, bool] | None:
    """(kind, layer, reverse) of a parameter name, or None if it is not one."""
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        return None
    return match.group(1), int(match.group(2)), match.group(3) is not None


def layer_param_names(
    num_layers: int, num_directions: int, *, bias: bool, projection: bool, peephole: bool
) -> list[ParamNames]:
    """The names of every layer and direction, index ``layer * num_directions + direction``."""
    names = []
    for layer in range(num_layers):
        for reverse in (False, True)[:num_directions]:
            w_ih, w_hh, b_ih, b_hh, w_hr, peep = (param_name(kind, layer, reverse) for kind in KINDS)
            names.append(
                ParamNames(
                    w_ih,
                    w_hh,
                    b_ih if bias else None,
                    b_hh if bias else None,
                    w_hr if projection else None,
                    peep if peephole else None,
                )
            )
    return names


def param_shapes(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    num_directions: int = 1,
    *,
    bias: bool = True,
    proj_size: int = 0,
    peephole: bool = False,
) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape, keyed by name, in `state_dict` order."""
    H, P, D = hidden_size, proj_size, num_directions
    H_out = P or H
    shapes: dict[str, tuple[int, ...]] = {}
    names = layer_param_names(num_layers, D, bias=bias, projection=P > 0, peephole=peephole)
    for k, layer_names in enumerate(names):
        inputs = input_size if k < D else D * H_out
        layer_shapes = ((4 * H, inputs), (4 * H, H_out), (4 * H,), (4 * H,), (P, H), (3, H))
        for name, shape in zip(layer_names, layer_shapes):
            if name is not None:
                shapes[name] = shape
    return shapes
