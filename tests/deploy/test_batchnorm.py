"""BatchNorm folding."""

import pytest
from torch import nn

from ssconv.deploy import fold_batchnorm


def test_fold_batchnorm_on_untraceable_model_warns():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: not traceable by FX
                return self.bn(self.conv(x))
            return self.conv(x)

    with pytest.warns(UserWarning, match="not traceable"):
        out = fold_batchnorm(Branchy())
    assert isinstance(out.bn, nn.BatchNorm2d)
