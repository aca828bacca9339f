from __future__ import annotations

import math

import numpy as np

from mltrack.export.artifacts import max_abs_diff


def test_identical_arrays_differ_by_zero():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert max_abs_diff(a, a.copy()) == 0.0


def test_difference_is_the_largest_absolute_one():
    assert max_abs_diff(np.array([1.0, 2.0]), np.array([1.5, 1.0])) == 1.0


def test_nan_in_the_same_place_is_preserved_not_a_difference():
    a = np.array([np.nan, 1.0])
    assert max_abs_diff(a, np.array([np.nan, 1.25])) == 0.25


def test_shape_or_nan_mismatch_is_infinite():
    assert math.isinf(max_abs_diff(np.zeros(3), np.zeros(4)))
    assert math.isinf(max_abs_diff(np.array([np.nan]), np.array([0.0])))
    assert math.isinf(max_abs_diff(np.array([np.inf]), np.array([-np.inf])))
