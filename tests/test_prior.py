import math

import pytest
import torch

from semisup.errors import UserError
from semisup.math import prior


def test_u1_alpha_schedule():
    alphas = [prior.alpha_schedule(t, 0.1, 2) for t in (0, 0.25, 0.5, 1)]
    assert alphas == pytest.approx([1.0, 0.94375, 0.775, 0.1])
    assert prior.alpha_schedule(0.3, 0.5, 0) == pytest.approx(0.5)  # k = 0: α_min throughout
    assert prior.alpha_schedule(2.0, 0.1, 2) == pytest.approx(0.1)  # progress is clipped


def test_u2_progressive_target_and_supervised_shift():
    p_data = torch.tensor([0.8, 0.2])
    target = prior.progressive_target(p_data, 0.5)
    assert torch.allclose(target, torch.tensor([2 / 3, 1 / 3]), atol=1e-6)
    shift = prior.logit_shift(p_data, target)
    assert torch.allclose(shift, torch.tensor([0.18232156, -0.51082562]), atol=1e-6)
    assert torch.allclose(prior.progressive_target(p_data, 0.0), torch.tensor([0.5, 0.5]))


def test_u3_adjusted_cross_entropy_and_zero_shift_at_alpha_one():
    p_data = torch.tensor([0.8, 0.2])
    shift = prior.logit_shift(p_data, prior.progressive_target(p_data, 0.5))
    ce = torch.nn.functional.cross_entropy(shift[None], torch.tensor([1]))
    assert ce.item() == pytest.approx(math.log(3), abs=1e-6)
    at_one = prior.logit_shift(p_data, prior.progressive_target(p_data, 1.0))
    assert at_one.abs().max().item() < 1e-6


def test_class_prior_from_counts_and_empty_class_error():
    assert torch.allclose(prior.class_prior([8, 2]), torch.tensor([0.8, 0.2]))
    with pytest.raises(UserError, match=r"classes \[1\] have no labeled image"):
        prior.class_prior([5, 0, 3])
