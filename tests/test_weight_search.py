"""`ensemble.weights: oof`: the ensemble's weights searched on out-of-fold rows, and the nested CV that scores each
fold with weights its own rows did not choose."""
from __future__ import annotations

import numpy as np
import pytest

from fold0123.common.schema import CompetitionSpec
from fold0123.data.competition import ATMACUP, Competition, score
from fold0123.ensemble import ArrayRows, search_weights, simplex_grid
from fold0123.stacking.runs import RunError


def classification(metric: str, n_classes: int) -> Competition:
    return Competition(CompetitionSpec(kind="classification", metric=metric, classes=[str(c) for c in range(n_classes)],
                                       group_column=None, columns=[]), n_classes)


TWO_CLASSES = classification("accuracy", 2)


def test_the_grid_is_every_multiple_of_the_step_on_the_simplex_and_refuses_a_huge_one():
    for members, step, count in ((1, 0.05, 1), (2, 0.05, 21), (3, 0.05, 231), (4, 0.25, 35)):
        grid = simplex_grid(members, step)
        assert grid.shape == (count, members)
        np.testing.assert_allclose(grid.sum(1), 1)
        assert (grid >= 0).all() and np.allclose(grid / step, np.round(grid / step))
        assert len(np.unique(grid.round(9), axis=0)) == count
    with pytest.raises(RunError, match=r"5 members at ensemble.weight_step 0.05 scores 10626 weight vectors \(at most"):
        simplex_grid(5, 0.05)


def brute_force(members, y, competition, rows, grid):
    """The grid point with the best score on `rows`, ties to equal weights: the search written out plainly."""
    def mixed(w):
        return sum(wi * m for wi, m in zip(w, members))[rows]

    scores = np.array([score(competition.metric, y[rows], mixed(w)) for w in grid])
    best = scores.min() if competition.lower_is_better else scores.max()
    ties = np.flatnonzero(np.isclose(scores, best, rtol=0, atol=1e-12))
    return ties[np.argmin(np.abs(grid[ties] - 1 / grid.shape[1]).sum(1))]


@pytest.mark.parametrize("competition", [TWO_CLASSES, ATMACUP, classification("macro_f1", 5),
                                         classification("top5_accuracy", 9)],
                         ids=["accuracy", "rmse", "macro_f1", "top5_accuracy"])
def test_each_fold_is_mixed_with_the_weights_the_other_folds_chose(competition):
    rng = np.random.default_rng(0)
    n, k = 90, 3
    y = rng.integers(0, competition.n_classes, n)
    folds = np.repeat(np.arange(k), n // k)
    members = [rng.dirichlet(np.ones(competition.n_classes), n) for _ in range(3)]
    members[0][np.arange(n), y] += 0.6  # one good member, two noisy ones
    members[0] /= members[0].sum(1, keepdims=True)
    grid = simplex_grid(3, 0.1)
    search = search_weights({f"m{i}": ArrayRows(m) for i, m in enumerate(members)}, y, folds, competition, 0.1)

    g = brute_force(members, y, competition, np.arange(n), grid)
    np.testing.assert_allclose(search.weights, grid[g])
    np.testing.assert_allclose(search.table.loc["all", ["m0", "m1", "m2"]].to_numpy(float), grid[g])
    for fold in range(k):
        chosen = grid[brute_force(members, y, competition, np.flatnonzero(folds != fold), grid)]
        np.testing.assert_allclose(search.table.loc[str(fold), ["m0", "m1", "m2"]].to_numpy(float), chosen)
        held_out = folds == fold
        mixture = sum(w * m for w, m in zip(chosen, members))[held_out]
        assert np.array_equal(search.nested.labels[held_out], mixture.argmax(1))
        np.testing.assert_allclose(search.nested.expected[held_out], mixture @ np.arange(competition.n_classes))
        assert search.table.loc[str(fold), "score (held out)"] == pytest.approx(
            score(competition.metric, y[held_out], mixture))


def test_a_fold_its_own_rows_would_have_chosen_otherwise_is_scored_honestly():
    """Fold 0's rows are right only with weight on member b, the other folds' only with weight on a: the weights
    the other folds choose get fold 0 wrong, which the score of the weights on their own rows would hide."""
    y = np.zeros(60, int)
    folds = np.repeat([0, 1, 2], 20)
    first = np.where(folds == 0, 0.1, 0.8)[:, None]   # p(class 0) of member a
    second = np.where(folds == 0, 0.6, 0.3)[:, None]  # of member b
    a, b = np.hstack([first, 1 - first]), np.hstack([second, 1 - second])
    search = search_weights({"a": ArrayRows(a), "b": ArrayRows(b)}, y, folds, TWO_CLASSES, 0.1)
    assert search.weights.tolist() == [0.5, 0.5]  # 40 of 60 right for every a-weight > 0.4: ties to equal weights
    assert search.table.loc["all", "score (chosen on)"] == pytest.approx(2 / 3)
    assert search.table.loc["0", "score (chosen on)"] == 1.0 and search.table.loc["0", "score (held out)"] == 0.0
    assert (search.nested.labels[folds == 0] == 1).all() and (search.nested.labels[folds > 0] == 0).all()
