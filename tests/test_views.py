"""The 8 test-time / augmentation views are the dihedral group D4, and each one inverts exactly."""
import pytest
import torch

from fold0123.data.views import N_VIEWS, VIEW_NAMES, all_views, apply_view, random_views, split_views


def invert_view(x, k):
    """The exact inverse of `apply_view(., k)`: rotate back, then undo the flips (flips are involutions)."""
    if k & 4:
        x = torch.rot90(x, 1, dims=(-2, -1))
    dims = ([-1] if k & 1 else []) + ([-2] if k & 2 else [])
    return torch.flip(x, dims) if dims else x


def compose_views(a, b):
    """The view equal to applying `a` then `b` (found by acting on a 2x2 probe)."""
    probe = torch.arange(4).view(2, 2)
    target = apply_view(apply_view(probe, a), b)
    return next(k for k in range(N_VIEWS) if torch.equal(apply_view(probe, k), target))


@pytest.fixture
def image():
    return torch.rand(2, 3, 7, 7, generator=torch.Generator().manual_seed(0))  # no symmetry by chance


def test_names_follow_the_originals_file_suffixes():
    assert VIEW_NAMES == ("identity", "h", "v", "hv", "r", "hr", "vr", "hvr")


def test_eight_views_are_distinct(image):
    views = [apply_view(image, k) for k in range(N_VIEWS)]
    for a in range(N_VIEWS):
        for b in range(a + 1, N_VIEWS):
            assert not torch.equal(views[a], views[b]), (VIEW_NAMES[a], VIEW_NAMES[b])


def test_views_invert_exactly(image):
    for k in range(N_VIEWS):
        assert torch.equal(invert_view(apply_view(image, k), k), image)
        assert torch.equal(apply_view(invert_view(image, k), k), image)


def test_views_form_a_group(image):
    table = [[compose_views(a, b) for b in range(N_VIEWS)] for a in range(N_VIEWS)]
    for a in range(N_VIEWS):
        assert sorted(table[a]) == list(range(N_VIEWS))  # each row a permutation: closed, cancellative
        for b in range(N_VIEWS):
            assert torch.equal(apply_view(apply_view(image, a), b), apply_view(image, table[a][b]))
    assert any(table[4][b] == 0 for b in range(N_VIEWS))


def test_flip_axes_and_clockwise_rotation():
    x = torch.tensor([[0, 1], [2, 3]])
    assert apply_view(x, 1).tolist() == [[1, 0], [3, 2]]  # h: mirror left-right
    assert apply_view(x, 2).tolist() == [[2, 3], [0, 1]]  # v: mirror top-bottom
    assert apply_view(x, 4).tolist() == [[2, 0], [3, 1]]  # r: 90 degrees clockwise (ImageMagick -rotate 90)
    assert apply_view(x, 5).tolist() == apply_view(apply_view(x, 1), 4).tolist()  # hr: flip, then rotate


def test_all_views_is_sample_major_and_splits_back(image):
    views = all_views(image)
    assert views.shape == (2 * N_VIEWS, 3, 7, 7)
    per_sample = split_views(views)
    for b in range(2):
        for k in range(N_VIEWS):
            assert torch.equal(per_sample[b, k], apply_view(image[b], k))


def test_all_views_refuses_non_square():
    with pytest.raises(ValueError, match="square"):
        all_views(torch.zeros(1, 3, 4, 5))


def test_random_views_apply_one_view_per_sample():
    x = torch.rand(16, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    ks = torch.arange(16) % N_VIEWS
    out = random_views(x, views=ks)
    for i in range(16):
        assert torch.equal(out[i], apply_view(x[i], int(ks[i])))
    a = random_views(x, torch.Generator().manual_seed(3))
    b = random_views(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_bad_view_index():
    with pytest.raises(ValueError, match="view index"):
        apply_view(torch.zeros(2, 2), 8)
