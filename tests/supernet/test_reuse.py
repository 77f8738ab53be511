"""Output reuse: a cheap step repeats the output of a recent, costlier step."""

import pytest
import torch

from sanas.supernet.reuse import reuse_costlier_outputs


def _one_hot_steps(count: int) -> torch.Tensor:
    """Step t's output is the one-hot vector e_t, so a reused output names its source."""
    return torch.eye(count)


def _sources(reused: torch.Tensor) -> list[int]:
    return reused.argmax(dim=-1).tolist()


def test_zero_steps_keeps_every_output() -> None:
    outputs = _one_hot_steps(4)
    reused = reuse_costlier_outputs(outputs, torch.tensor([5.0, 1.0, 1.0, 1.0]), steps=0)
    assert torch.equal(reused, outputs)


def test_cheap_steps_repeat_the_last_costly_step_for_at_most_the_reuse_steps() -> None:
    costs = torch.tensor([1.0, 5.0, 1.0, 1.0, 1.0, 5.0, 1.0])
    reused = reuse_costlier_outputs(_one_hot_steps(7), costs, steps=2)
    assert _sources(reused) == [0, 1, 1, 1, 4, 5, 5]


def test_a_reused_output_is_never_passed_on_beyond_its_source() -> None:
    costs = torch.tensor([5.0, 1.0, 1.0, 1.0])
    reused = reuse_costlier_outputs(_one_hot_steps(4), costs, steps=1)
    assert _sources(reused) == [0, 0, 2, 3]


def test_the_most_recent_costlier_step_wins_and_equal_costs_keep_their_own() -> None:
    costs = torch.tensor([9.0, 4.0, 1.0, 1.0])
    reused = reuse_costlier_outputs(_one_hot_steps(4), costs, steps=3)
    assert _sources(reused) == [0, 0, 1, 1]


def test_batches_of_sequences_are_held_independently() -> None:
    outputs = _one_hot_steps(3).expand(2, 3, 3)
    costs = torch.tensor([[5.0, 1.0, 1.0], [1.0, 1.0, 5.0]])
    reused = reuse_costlier_outputs(outputs, costs, steps=2)
    assert reused.argmax(dim=-1).tolist() == [[0, 0, 0], [0, 1, 2]]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="reuse steps must be >= 0"):
        reuse_costlier_outputs(_one_hot_steps(2), torch.ones(2), steps=-1)
    with pytest.raises(ValueError, match="costs must have the outputs' leading shape"):
        reuse_costlier_outputs(_one_hot_steps(2), torch.ones(3), steps=1)
