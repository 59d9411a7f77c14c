"""The generic SHAP game explainer, on games whose Shapley values are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import shap
from numpy.typing import NDArray

from memcrm.explain import shapley
from memcrm.explain.shapley import (
    DEFAULT_PERMUTATIONS,
    AdditivityError,
    default_max_evals,
    explain_game,
    permutation_walks,
    uses_exact,
)

WEIGHTS = np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0], [-0.25, 4.0]])


def additive(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
    """v(S) = 0.7 + sum of the present players' weights, two outputs."""
    return 0.7 + coalitions.astype(np.float64) @ WEIGHTS


@pytest.mark.parametrize("n_players", [4, 25])
def test_additive_game_gives_each_players_weight(n_players: int) -> None:
    weights = np.linspace(-1.5, 2.0, n_players)

    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        return (coalitions.astype(np.float64) @ weights)[:, None] - 3.0

    (result,) = explain_game(game, n_players, seed=11)
    np.testing.assert_allclose(result.values, weights, atol=1e-12)
    assert result.base_value == pytest.approx(-3.0)
    assert result.output_value == pytest.approx(weights.sum() - 3.0)
    expected = "ExactExplainer" if n_players == 4 else "PermutationExplainer"
    assert result.explainer.startswith(f"shap.{expected}(")


def test_multi_output_game_is_explained_per_output() -> None:
    results = explain_game(additive, 4, seed=0)
    assert [r.output_index for r in results] == [0, 1]
    for k, result in enumerate(results):
        np.testing.assert_allclose(result.values, WEIGHTS[:, k], atol=1e-12)
        assert result.base_value == pytest.approx(0.7)


@pytest.mark.parametrize("n_players", [4, 25])
def test_given_ends_are_the_base_and_output_values(n_players: int) -> None:
    weights = np.linspace(-1.5, 2.0, n_players)

    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        return (coalitions.astype(np.float64) @ weights)[:, None] - 3.0

    # The caller's own numbers for the empty and full coalitions, off by rounding-level noise.
    ends = np.array([[-3.0 + 1e-9], [weights.sum() - 3.0 - 1e-9]])
    (result,) = explain_game(game, n_players, seed=11, ends=ends)
    assert (result.base_value, result.output_value) == (ends[0, 0], ends[1, 0])
    np.testing.assert_allclose(result.values, weights, atol=1e-12)
    # Ends that the game's values do not add up to are refused, as any additivity failure.
    with pytest.raises(AdditivityError):
        explain_game(game, n_players, seed=11, ends=ends + np.array([[0.0], [0.1]]))
    with pytest.raises(ValueError, match="ends must be"):
        explain_game(game, n_players, seed=11, ends=ends[:1])


def test_pairwise_interaction_is_split_equally_by_permutation_sampling() -> None:
    # v(S) = x0 * x1 + x2 among 20 players: Shapley values 0.5, 0.5, 1, 0, ..., 0. Antithetic
    # permutation sampling is exact for games with at most pairwise interactions.
    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        x = coalitions.astype(np.float64)
        return (x[:, 0] * x[:, 1] + x[:, 2])[:, None]

    (result,) = explain_game(game, 20, seed=5, max_evals=default_max_evals(20, 2))
    assert "PermutationExplainer(max_evals=82, seed=5)" in result.explainer
    expected = np.zeros(20)
    expected[:3] = [0.5, 0.5, 1.0]
    np.testing.assert_allclose(result.values, expected, atol=1e-12)


def test_additivity_holds_for_a_game_with_higher_order_interactions() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(30, 3))

    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        return np.tanh(coalitions.astype(np.float64) @ w)

    for result in explain_game(game, 30, seed=1):
        assert abs(result.base_value + result.values.sum() - result.output_value) < 1e-4


def test_same_seed_gives_identical_numbers_and_restores_numpy_rng() -> None:
    rng = np.random.default_rng(9)
    w = rng.normal(size=(16, 2))

    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        return np.sin(coalitions.astype(np.float64) @ w)

    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    first = explain_game(game, 16, seed=42)
    assert np.array_equal(np.random.get_state()[1], state)
    second = explain_game(game, 16, seed=42)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.values, b.values)
        assert (a.base_value, a.output_value, a.explainer) == (
            b.base_value,
            b.output_value,
            b.explainer,
        )


def test_exact_explainer_is_used_when_enumeration_fits_the_budget() -> None:
    assert uses_exact(6, default_max_evals(6))  # 64 <= 130
    assert not uses_exact(8, default_max_evals(8))  # 256 > 170


def test_no_players_gives_base_equal_to_output() -> None:
    results = explain_game(lambda c: np.full((len(c), 2), 1.5), 0, seed=0)
    assert [(r.base_value, r.output_value, r.values.shape) for r in results] == [
        (1.5, 1.5, (0,)),
        (1.5, 1.5, (0,)),
    ]


def test_malformed_games_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_outputs"):
        explain_game(lambda c: np.zeros(len(c)), 3, seed=0)
    with pytest.raises(ValueError, match="max_evals"):
        explain_game(additive, 4, seed=0, max_evals=8)  # below 2**4 and below 2*4+1


def test_additivity_violation_raises() -> None:
    # A value function that depends on the batch it is evaluated in, not only on the coalition,
    # breaks additivity; the explainer must refuse rather than return inconsistent numbers.
    def batch_dependent(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        scale = 1.0 if len(coalitions) == 2 else 2.0
        return scale * coalitions.astype(np.float64).sum(axis=1, keepdims=True)

    with pytest.raises(AdditivityError):
        explain_game(batch_dependent, 12, seed=0)


def test_permutation_game_is_evaluated_in_one_call_with_shaps_own_numbers() -> None:
    # Every coalition of shap's walks is evaluated in one call (plus the call for the base and
    # output values), and the values are those shap computes calling the game per walk.
    rng = np.random.default_rng(4)
    w = rng.normal(size=(33, 3))

    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        x = coalitions.astype(np.float64)
        return np.tanh((x[:, :, None] * w[None]).sum(axis=1))  # row by row: batch-invariant

    sizes: list[int] = []

    def counted(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        sizes.append(len(coalitions))
        return game(coalitions)

    budget = default_max_evals(33)
    results = explain_game(counted, 33, seed=7, max_evals=budget)
    assert sizes == [2, budget]

    state = np.random.get_state()
    reference = shap.PermutationExplainer(
        lambda masked: game(np.asarray(masked) > 0.5), np.zeros((1, 33)), seed=7
    )(np.ones((1, 33)), max_evals=budget, silent=True)
    np.random.set_state(state)
    expected = np.asarray(reference.values).reshape(33, 3)
    for k, result in enumerate(results):
        assert np.array_equal(result.values, expected[:, k])


def test_permutation_walks_are_prefixes_then_suffixes_of_each_permutation() -> None:
    walks = permutation_walks(5, seed=3, permutations=2)
    assert walks.shape == (2, 11, 5)
    for walk in walks:
        sizes = walk.sum(axis=1)
        assert list(sizes) == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0]
        forward, backward = walk[:6], walk[5:]
        assert (np.diff(forward.astype(int), axis=0) >= 0).all()  # players only join
        assert (np.diff(backward.astype(int), axis=0) <= 0).all()  # then leave
        order = [int(np.flatnonzero(forward[j + 1] & ~forward[j])[0]) for j in range(5)]
        leaving = [int(np.flatnonzero(backward[j] & ~backward[j + 1])[0]) for j in range(5)]
        assert order == leaving  # the backward walk removes them in the same order


def test_walks_that_shap_does_not_take_fall_back_to_the_game(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Should shap ever sample other permutations, its calls are answered by the game itself.
    rng = np.random.default_rng(6)
    w = rng.normal(size=(20, 2))

    def game(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        x = coalitions.astype(np.float64)
        return np.sin((x[:, :, None] * w[None]).sum(axis=1))

    expected = explain_game(game, 20, seed=2)
    monkeypatch.setattr(
        shapley, "permutation_walks", lambda n, seed, p: permutation_walks(n, seed + 1, p)
    )
    sizes: list[int] = []

    def counted(coalitions: NDArray[np.bool_]) -> NDArray[np.float64]:
        sizes.append(len(coalitions))
        return game(coalitions)

    got = explain_game(counted, 20, seed=2)
    assert sizes[:2] == [2, default_max_evals(20)] and len(sizes) == 2 + DEFAULT_PERMUTATIONS
    for a, b in zip(expected, got, strict=True):
        assert np.array_equal(a.values, b.values)
