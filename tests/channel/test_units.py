"""channel.units: the one place for dB/dBm/W conversions, hand-worked values."""

import math

import numpy as np
import pytest

from channel import units as U


def test_hand_worked_values():
    assert U.dbm_to_watt(30.0) == pytest.approx(1.0)
    assert U.dbm_to_w(23.0) == pytest.approx(0.19952623149688797)
    assert U.dbm_to_mw(0.0) == pytest.approx(1.0)
    assert U.watt_to_dbm(0.2) == pytest.approx(23.010299956639813)
    assert U.mw_to_dbm(100.0) == pytest.approx(20.0)
    assert U.db(1000.0) == pytest.approx(30.0)
    assert U.db(0.0) == -math.inf
    assert U.linear_to_db(0.0) == -np.inf


@pytest.mark.parametrize("x", [-123.4, -3.0, 0.0, 0.5, 17.0, 46.0])
def test_forms_agree(x):
    lin = U.db_to_linear(x)
    assert U.from_db(x) == pytest.approx(float(lin), rel=1e-14)
    assert U.linear_to_db(lin) == pytest.approx(x, abs=1e-12)
    assert U.to_db(U.from_db(x)) == pytest.approx(x, abs=1e-12)
    assert U.db(U.from_db(x)) == pytest.approx(x, abs=1e-12)
    assert U.dbm_to_w(x) == pytest.approx(float(U.dbm_to_watt(x)), rel=1e-14)


def test_arrays_keep_shape():
    a = np.array([[0.0, 10.0], [20.0, -10.0]])
    assert U.db_to_linear(a).shape == (2, 2)
    np.testing.assert_allclose(U.from_db(a), [[1.0, 10.0], [100.0, 0.1]])
    np.testing.assert_allclose(U.to_db(U.from_db(a)), a, atol=1e-12)


def test_link_reexports_the_same_functions():
    from channel import link

    assert link.db_to_linear is U.db_to_linear and link.watt_to_dbm is U.watt_to_dbm
