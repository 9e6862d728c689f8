"""Fixtures of the pose-estimation tests."""

import pytest

from tests.rendered_template import make_template


@pytest.fixture(scope="module")
def template():
    """A car's surface (vertices [300, 3]) with random unit features θ_j [300, 16] and two background
    prototypes β [2, 16]."""
    return make_template()
