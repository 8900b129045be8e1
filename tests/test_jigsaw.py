"""Jigsaw batches: labels say where each tile went, so un-shuffling with them restores the image."""
import pytest
import torch
import torch.nn.functional as F

from fold0123.data.jigsaw import crop_to_grid, jigsaw_batch, jigsaw_loss, permutation_set, shuffle_tiles


def unshuffle_tiles(images, labels, grid=3):
    """Put every tile back where it came from: the inverse of `shuffle_tiles(., labels)`."""
    return shuffle_tiles(images, labels.argsort(-1), grid)


def min_hamming_distance(perms):
    """Smallest Hamming distance between two different rows: how hard the closest pair is to tell apart."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


def jigsaw_accuracy(logits, labels):
    """`tile_accuracy`: share of tiles placed right; `perm_accuracy`: share of images with every tile right."""
    tiles = labels.shape[-1]
    right = logits.reshape(-1, tiles, tiles).argmax(-1) == labels.to(logits.device)
    return {"tile_accuracy": float(right.float().mean()), "perm_accuracy": float(right.all(-1).float().mean())}


def images(b=3, size=30, seed=0):
    return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("perms", [None, "hamming"])
def test_labels_recover_the_original(perms):
    x = images()
    table = permutation_set(30, kind="hamming") if perms else None
    shuffled, labels = jigsaw_batch(x, 8, table, torch.Generator().manual_seed(0))
    assert shuffled.shape == (24, 3, 30, 30) and labels.shape == (24, 9) and shuffled.dtype == torch.uint8
    assert torch.equal(unshuffle_tiles(shuffled, labels), x.repeat_interleave(8, 0))
    identity = torch.arange(9)
    for b in range(3):
        group = labels[b * 8:(b + 1) * 8]
        assert torch.equal(group[0], identity)  # the original's recipe: identity + 7 shuffles
        assert not (group[1:] == identity).all(-1).any()
        assert torch.equal(group.sort(-1).values, identity.expand(8, 9))  # every row a permutation
        assert not torch.equal(shuffled[b * 8 + 1], x[b])
    if table is not None:
        assert all(any(torch.equal(row, t) for t in table) for row in labels)


def test_label_is_the_position_each_tile_went_to():
    tile_id = torch.arange(9).view(1, 1, 3, 3).repeat_interleave(4, -1).repeat_interleave(4, -2)  # 12x12, tile t = t
    perm = torch.tensor([[4, 0, 8, 1, 2, 3, 5, 6, 7]])
    out = shuffle_tiles(tile_id, perm)[0, 0]
    for t in range(9):
        p = int(perm[0, t])
        assert int(out[(p // 3) * 4, (p % 3) * 4]) == t


def test_sizes_not_divisible_by_three_are_centre_cropped():
    x = images(2, 32)
    shuffled, labels = jigsaw_batch(x, 4, generator=torch.Generator().manual_seed(1))
    assert shuffled.shape == (8, 3, 30, 30)
    assert torch.equal(unshuffle_tiles(shuffled, labels), crop_to_grid(x).repeat_interleave(4, 0))
    assert torch.equal(crop_to_grid(x), x[..., 1:31, 1:31])


def test_generator_makes_batches_reproducible():
    x = images()
    a = jigsaw_batch(x, 8, generator=torch.Generator().manual_seed(5))
    b = jigsaw_batch(x, 8, generator=torch.Generator().manual_seed(5))
    c = jigsaw_batch(x, 8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_hamming_set_is_farther_apart_than_random():
    hamming, random = permutation_set(50, kind="hamming", seed=0), permutation_set(50, kind="random", seed=0)
    for table in (hamming, random):
        assert torch.equal(table[0], torch.arange(9))
        assert len({tuple(r.tolist()) for r in table}) == 50
    assert min_hamming_distance(hamming) > min_hamming_distance(random)
    assert min_hamming_distance(hamming) >= 6


def test_loss_is_mean_of_nine_cross_entropies():
    logits = torch.randn(5, 81, generator=torch.Generator().manual_seed(0))
    labels = torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(i)) for i in range(5)])
    manual = sum(F.cross_entropy(logits.view(5, 9, 9)[:, t], labels[:, t]) for t in range(9)) / 9
    assert torch.allclose(jigsaw_loss(logits, labels), manual)
    perfect = F.one_hot(labels, 9).float().view(5, 81) * 20
    assert jigsaw_loss(perfect, labels) < 1e-6
    assert jigsaw_accuracy(perfect, labels) == {"tile_accuracy": 1.0, "perm_accuracy": 1.0}
    acc = jigsaw_accuracy(torch.zeros(5, 81).index_fill_(1, torch.arange(0, 81, 10), 1.0), labels)
    assert acc["tile_accuracy"] == pytest.approx(float((labels == torch.arange(9)).float().mean()))


def test_bad_inputs():
    with pytest.raises(ValueError, match="B, C, H, W"):
        jigsaw_batch(torch.zeros(3, 30, 30))
    with pytest.raises(ValueError, match="unknown permutation set kind"):
        permutation_set(3, kind="bogus")
    with pytest.raises(ValueError, match="tiles"):
        jigsaw_batch(images(), 8, permutation_set(5, grid=2))
