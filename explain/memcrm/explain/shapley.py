"""SHAP values of a generic cooperative game, computed with the ``shap`` library.

A game is ``value_fn(coalitions) -> values``: ``coalitions`` is a boolean matrix
(n, n_players), True = player present; ``values`` is (n, n_outputs). We hand shap a single
background row of zeros (every player absent) and explain the all-ones row (every player
present), so shap's masked inputs *are* coalitions, ``base_value`` is the game's value with
every player absent and ``output_value`` its value with every player present.

Which shap explainer:

* ``shap.ExactExplainer`` when ``2 ** n_players <= max_evals``: it enumerates every coalition
  (in Gray-code order), giving the exact Shapley values for no more evaluations than the
  sampling budget would have used.
* ``shap.PermutationExplainer`` otherwise: it walks ``max_evals // (2 n_players + 1)`` random
  permutations forward and backward (antithetic). Every walk telescopes from the empty to the
  full coalition, so ``base + sum(values) == output`` holds exactly, whatever the budget; one
  antithetic pair is already exact for games with at most pairwise interactions, and more pairs
  reduce the sampling error of higher-order interactions. :func:`default_max_evals` buys ten
  antithetic pairs (shap's own default for ``max_evals="auto"``).

``PermutationExplainer`` draws its permutations from numpy's *global* RNG, seeded with
``np.random.seed(seed)`` when it is built. To make equal inputs give equal numbers in a
multi-threaded server, explainer construction and use run under one lock, and the global RNG
state is restored afterwards so callers' numpy randomness is not disturbed.

Evaluating the game in one batch: shap asks for one antithetic pair of walks at a time (2n + 1
coalitions per call), so a game with a fixed cost per call (a neural network's forward pass)
would pay it once per permutation. The walks shap will take are known before it starts: the
permutations are successive shuffles of ``arange(n)`` by a ``RandomState(seed)`` (the
global RNG seeded as shap seeds it; with one background row of zeros and the all-ones point,
every player varies). So every coalition of every walk is evaluated first, in one call of the
game, and shap's model then answers each of its calls from that table -- after checking that
the coalitions it asks for are exactly the ones evaluated, in the same order; any other call
(a shap whose sampling differs) is evaluated by the game directly. shap still computes every
SHAP value from the game's values; only the number of calls of the game changes. (A game whose
value for a coalition depends on the batch it is evaluated in is refused by the additivity
check, as before: the base and output values come from a call of their own.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shap
from numpy.typing import NDArray

ADDITIVITY_TOLERANCE = 1e-4
DEFAULT_PERMUTATIONS = 10

ValueFn = Callable[[NDArray[np.bool_]], NDArray[np.float64]]

_LOCK = threading.Lock()


class AdditivityError(ArithmeticError):
    """base + sum(SHAP values) differs from the output value by more than the tolerance."""


@dataclass(frozen=True, slots=True)
class GameExplanation:
    """The SHAP values of one output of a game."""

    output_index: int
    base_value: float  # value with every player absent
    output_value: float  # value with every player present
    values: NDArray[np.float64]  # (n_players,)
    explainer: str  # the shap explainer and its settings


def default_max_evals(n_players: int, permutations: int = DEFAULT_PERMUTATIONS) -> int:
    """The budget for ``permutations`` antithetic permutation pairs of ``n_players`` players."""
    return permutations * (2 * max(n_players, 1) + 1)


def uses_exact(n_players: int, max_evals: int) -> bool:
    return bool(2**n_players <= max_evals)


def explain_game(
    value_fn: ValueFn,
    n_players: int,
    *,
    seed: int,
    max_evals: int | None = None,
    tolerance: float = ADDITIVITY_TOLERANCE,
    ends: NDArray[np.float64] | None = None,
) -> list[GameExplanation]:
    """SHAP values of every output of the game; same inputs and seed give identical numbers.

    ``ends`` (2, n_outputs) are the game's values with every player absent and present when
    the caller has already computed them (e.g. the log-odds it ranked on): they become the
    explanations' base and output values as given, instead of being evaluated again (a game
    whose values depend on the size of its batch at the rounding level would report numbers
    that differ from the caller's in their last digits).

    Raises ``AdditivityError`` when ``base + sum(values)`` misses the all-present value by more
    than ``tolerance`` for any output, and ``ValueError`` for a malformed game.
    """
    if n_players < 0:
        raise ValueError("n_players must not be negative")
    budget = default_max_evals(n_players) if max_evals is None else int(max_evals)

    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        out = np.asarray(value_fn(coalitions), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != coalitions.shape[0]:
            raise ValueError(f"value_fn must return (n, n_outputs), got {out.shape}")
        return out

    if ends is None:
        ends = game(np.stack([np.zeros(n_players, bool), np.ones(n_players, bool)]))
    else:
        ends = np.asarray(ends, dtype=np.float64)
        if ends.ndim != 2 or ends.shape[0] != 2:
            raise ValueError(f"ends must be (2, n_outputs), got {ends.shape}")
    base, full = ends[0], ends[1]
    n_outputs = int(ends.shape[1])
    if n_players == 0:
        values = np.zeros((0, n_outputs))
        description = "none (no players)"
    else:
        values, description = _shap_values(game, n_players, n_outputs, seed, budget)
    explanations = []
    for k in range(n_outputs):
        gap = abs(base[k] + float(values[:, k].sum()) - full[k])
        if not gap <= tolerance:
            raise AdditivityError(
                f"output {k}: base {base[k]:.6f} + sum {values[:, k].sum():.6f} != "
                f"output {full[k]:.6f} (gap {gap:.2e} > {tolerance:.0e}) with {description}"
            )
        explanations.append(
            GameExplanation(
                output_index=k,
                base_value=float(base[k]),
                output_value=float(full[k]),
                values=np.ascontiguousarray(values[:, k], dtype=np.float64),
                explainer=description,
            )
        )
    return explanations


def _shap_values(
    game: ValueFn, n_players: int, n_outputs: int, seed: int, max_evals: int
) -> tuple[NDArray[np.float64], str]:
    def model(masked: NDArray[np.float64]) -> NDArray[np.float64]:
        return game(np.asarray(masked) > 0.5)

    background = np.zeros((1, n_players))
    point = np.ones((1, n_players))
    if uses_exact(n_players, max_evals):
        exact = shap.explainers.ExactExplainer(model, background)
        raw = exact(point, max_evals=max_evals, silent=True).values
        description = f"shap.ExactExplainer(max_evals={max_evals})"
    else:
        minimum = 2 * n_players + 1
        if max_evals < minimum:
            raise ValueError(f"max_evals={max_evals} is below 2 * n_players + 1 = {minimum}")
        walks = permutation_walks(n_players, seed, max_evals // minimum)
        prefetched = _Prefetched(game, walks, game(walks.reshape(-1, n_players)))
        with _LOCK:
            state = np.random.get_state()
            try:
                permutation = shap.PermutationExplainer(prefetched, background, seed=seed)
                # The explainer's computation for one row, which its ``__call__`` runs and
                # then wraps in an ``Explanation`` (~0.5 ms of bookkeeping unused here).
                raw = permutation.explain_row(
                    point[0],
                    max_evals=max_evals,
                    main_effects=False,
                    error_bounds=False,
                    batch_size=10,
                    outputs=None,
                    silent=True,
                )["values"]
            finally:
                np.random.set_state(state)
        description = f"shap.PermutationExplainer(max_evals={max_evals}, seed={seed})"
    values = np.asarray(raw, dtype=np.float64).reshape(n_players, n_outputs)
    return values, description


def permutation_walks(n_players: int, seed: int, permutations: int) -> NDArray[np.bool_]:
    """The coalitions ``shap.PermutationExplainer(..., seed=seed)`` evaluates, in its order:
    (permutations, 2 n + 1, n). For permutation ``p`` (the ``p``-th successive shuffle of
    ``arange(n)``), row ``j <= n`` holds its first ``j`` players (the forward walk, from the
    empty to the full coalition) and row ``n + j`` every player but its first ``j`` (the
    backward walk, back to the empty coalition)."""
    rng = np.random.RandomState(seed)
    order = np.arange(n_players)
    ranks = np.empty((permutations, n_players), dtype=np.int64)
    for p in range(permutations):
        rng.shuffle(order)
        ranks[p, order] = np.arange(n_players)
    steps = np.arange(n_players + 1)[None, :, None]
    forward = ranks[:, None, :] < steps  # rows 0..n
    backward = ranks[:, None, :] >= steps[:, 1:]  # rows n+1..2n
    walks: NDArray[np.bool_] = np.concatenate([forward, backward], axis=1)
    return walks


class _Prefetched:
    """shap's model: answers each call from the values of the walks evaluated beforehand when
    it asks for exactly the next walk's coalitions, else evaluates the game."""

    def __init__(
        self, game: ValueFn, walks: NDArray[np.bool_], values: NDArray[np.float64]
    ) -> None:
        self._game = game
        self._walks = walks
        self._values = values.reshape(walks.shape[0], walks.shape[1], -1)
        self._next = 0

    def __call__(self, masked: NDArray[np.float64]) -> NDArray[np.float64]:
        coalitions = np.asarray(masked) > 0.5
        k = self._next
        if k < len(self._walks) and np.array_equal(coalitions, self._walks[k]):
            self._next = k + 1
            answer: NDArray[np.float64] = self._values[k]
            return answer
        return self._game(coalitions)


def warm_up() -> None:
    """Compile shap's numba kernels now rather than inside the first request (~seconds)."""

    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        return coalitions.astype(np.float64) @ np.ones((coalitions.shape[1], 2))

    explain_game(game, 3, seed=0)
    explain_game(game, 12, seed=0)
