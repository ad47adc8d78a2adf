import torch
import torch.nn.functional as F

from semisup.augment.weak import WeakAugment, reflect, shift_and_flip


def test_reflect_does_not_repeat_the_edge():
    assert reflect(torch.tensor([-2, -1, 0, 4, 5, 6]), 5).tolist() == [2, 1, 0, 4, 3, 2]


def test_shift_and_flip_equals_pad_then_crop():
    images = torch.randint(0, 256, (6, 3, 9, 7), dtype=torch.uint8)
    dx = torch.tensor([0, 2, -2, 1, 0, -1])
    dy = torch.tensor([0, -1, 2, 0, -2, 1])
    flip = torch.tensor([False, True, False, True, False, True])
    out = shift_and_flip(images, dx, dy, flip)
    for i in range(6):
        img = images[i].flip(-1) if flip[i] else images[i]
        padded = F.pad(img[None].float(), (2, 2, 2, 2), mode="reflect")[0]
        crop = padded[:, 2 + dy[i] : 2 + dy[i] + 9, 2 + dx[i] : 2 + dx[i] + 7]
        assert torch.equal(out[i], crop.to(torch.uint8))


def test_weak_augment_shift_range_flip_switch_and_reproducibility():
    images = torch.arange(32 * 32, dtype=torch.int64).reshape(1, 1, 32, 32).repeat(200, 1, 1, 1)
    weak = WeakAugment(hflip=False)
    out = weak(images, torch.Generator().manual_seed(0))
    # Recover each image's shift from the position of pixel (16, 16).
    rows, cols = (out[:, 0] == 16 * 32 + 16).nonzero()[:, 1:].T
    # The marker may be reflected away for no image: shifts are at most 4 < 16.
    assert len(rows) == 200
    shifts = {(16 - int(r), 16 - int(c)) for r, c in zip(rows, cols, strict=True)}
    assert max(max(abs(a), abs(b)) for a, b in shifts) == 4
    assert len(shifts) > 40  # many of the 81 shifts occur
    again = weak(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    flips = WeakAugment(hflip=True, pad_fraction=0.0)(images, torch.Generator().manual_seed(1))
    flipped = (flips == images.flip(-1)).all(dim=(1, 2, 3))
    same = (flips == images).all(dim=(1, 2, 3))
    assert (flipped | same).all()
    assert 70 < int(flipped.sum()) < 130
