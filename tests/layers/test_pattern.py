import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssconv.layers.pattern import KernelType, SSCPattern

from .spec_oracle import spec_dense_mask, spec_kernel_type, spec_params


@st.composite
def patterns(draw):
    groups = draw(st.integers(1, 4))
    cin_g = draw(st.integers(1, 12))
    cout_g = draw(st.integers(1, 12))
    divisors = [d for d in range(1, cin_g + 1) if cin_g % d == 0]
    period = draw(st.sampled_from([*divisors, None]))
    pointwise = True if period is None else draw(st.booleans())
    k = draw(st.sampled_from([1, 3, 5, (1, 3), (3, 5)]))
    spatial = (
        "full"
        if k in (1, (1, 1)) or period is None
        else draw(st.sampled_from(["full", "checkerboard"]))
    )
    return groups * cin_g, groups * cout_g, k, groups, period, pointwise, spatial


@given(patterns())
@settings(max_examples=150, deadline=None)
def test_params_match_spec_formula(args):
    pat = SSCPattern(*args)
    assert pat.num_params == pytest.approx(spec_params(*args), abs=1e-9)
    assert pat.density == pytest.approx(pat.num_params / pat.dense_params)


@given(patterns())
@settings(max_examples=100, deadline=None)
def test_dense_mask_matches_spec(args):
    pat = SSCPattern(*args)
    assert torch.equal(pat.dense_mask(), spec_dense_mask(*args))
    assert int(pat.dense_mask().sum()) == pat.num_params


def test_type_map_matches_spec_loop():
    c_in, c_out, groups, period = 12, 8, 2, 3
    pat = SSCPattern(c_in, c_out, 3, groups, period, True, "full")
    tm = pat.type_map()
    for o in range(c_out):
        for i in range(c_in):
            expected = spec_kernel_type(o, i, c_in, c_out, groups, period, True)
            assert KernelType.NAMES[int(tm[o, i])] == expected


def test_each_filter_holds_cin_over_gp_spatial_kernels_shifting_by_one():
    pat = SSCPattern(16, 16, 3, 1, 4, True, "full")
    tm = pat.type_map()
    s = tm == KernelType.SPATIAL
    assert (s.sum(1) == 16 // 4).all()
    firsts = [int(row.nonzero()[0]) for row in s]
    # The first spatial kernel moves by one from filter to filter (mod P).
    assert firsts[:4] == [0, 1, 2, 3]


def test_hetconv_layout_paper_example():
    # HetConv (Singh et al. 2019) with part P = 4: filter 0 has K x K kernels on channels
    # 0, 4, 8, ..., filter 1 on 1, 5, 9, ...; 1 x 1 everywhere else.
    pat = SSCPattern(8, 2, 3, 1, 4, True, "full")
    names = [[KernelType.NAMES[int(t)] for t in row] for row in pat.type_map()]
    assert "".join(names[0]) == "SPPPSPPP"
    assert "".join(names[1]) == "PSPPPSPP"


def test_checkerboard_parities_alternate_and_shift():
    pat = SSCPattern(8, 4, 3, 1, 2, False, "checkerboard")
    parity = pat.spatial_parity()  # (C_out, A) in absolute order
    # Filter 0 (o'=0): j = a, parity j % 2 -> 0, 1, 0, 1.
    assert parity[0].tolist() == [0, 1, 0, 1]
    # Every filter sees both parities.
    assert all(set(row.tolist()) == {0, 1} for row in parity)
    # K = 3: parity 0 is corners + centre (5 taps), parity 1 the edge middles (4 taps).
    masks = pat.spatial_tap_mask
    assert masks[0, 0].sum() == 5 and masks[0, 0, 1, 1]
    assert masks[0, 1].sum() == 4 and not masks[0, 1, 1, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"period": 3}, "period=3 must divide the group width"),
        ({"kernel_size": 2}, "kernel_size must be odd"),
        ({"spatial": "diagonal"}, "spatial must be one of"),
        ({"groups": 3}, "groups=3 must divide"),
        ({"period": None, "pointwise": False}, "period=None"),
        ({"period": 0}, "period must be a positive int"),
        ({"kernel_size": 1, "spatial": "checkerboard"}, "checkerboard"),
        ({"pointwise": "yes"}, "pointwise must be True or False"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, match):
    args = {
        "in_channels": 8,
        "out_channels": 8,
        "kernel_size": 3,
        "groups": 1,
        "period": 2,
        "pointwise": True,
        "spatial": "full",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SSCPattern(**args)


def test_period_error_lists_allowed_values():
    with pytest.raises(ValueError, match=r"allowed periods: \[1, 2, 4, 8\] or None"):
        SSCPattern(8, 8, 3, 1, 3)


def test_coverage_and_executed_counts():
    pat = SSCPattern(16, 2, 3, 1, 4, True, "full")  # only 2 filters for 4 residues
    assert pat.spatial_coverage == 0.5
    full = SSCPattern(16, 16, 3, 1, 4, True, "full")
    assert full.spatial_coverage == 1.0
    # Grouped 3x3 (16 filters x 4 inputs x 9) + 1x1 (16 x 16).
    assert full.executed_params == 16 * 4 * 9 + 16 * 16
