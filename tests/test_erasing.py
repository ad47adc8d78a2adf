import torch

from semisup.math import erasing


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_hash_is_murmur3_finaliser_chained_over_seed_keys_and_draw():
    copy, image = torch.tensor([0, 7, 2**31 + 5]), torch.tensor([3, 0, 99])
    u = erasing.hash_uniforms(11, [copy, image], 3)
    for row in range(3):
        h = _fmix32(_fmix32(_fmix32(11 + 0x9E3779B9) ^ int(copy[row])) ^ int(image[row]))
        expected = [_fmix32(h ^ k) / 2**32 for k in range(3)]
        assert u[row].tolist() == expected


def test_uniforms_look_uniform_and_keys_decorrelate():
    u = erasing.hash_uniforms(0, [torch.zeros(50000, dtype=torch.int64), torch.arange(50000)], 2)
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.std().item() - 12**-0.5) < 0.01
    assert abs(torch.corrcoef(u.T)[0, 1].item()) < 0.02


def test_erasing_probability_zero_and_box_bounds():
    images = torch.full((500, 3, 32, 32), 100, dtype=torch.uint8)
    index = torch.arange(500)
    zero = torch.zeros(500, dtype=torch.int64)
    assert torch.equal(erasing.erase_copies(images, zero, index, 0, probability=0.0), images)
    out = erasing.erase_copies(images, zero, index, 0, probability=1.0)
    changed = (out != 100).any(dim=1)  # (N, H, W): same box on every channel
    assert torch.equal((out != 100).all(dim=1) | ~changed, torch.ones_like(changed))
    area = changed.flatten(1).float().sum(dim=1) / 1024
    erased = area > 0
    assert erased.float().mean() > 0.99  # all but images whose fill happened to be 100
    assert area[erased].max() <= 0.4 and area[erased].min() >= 0.01  # s ∈ [0.02, 0.4], floored
