"""Exact GW path: invariances, symmetry, agreement with POT, start selection, batched path."""

import numpy as np
import ot
import pytest

from dilt.analysis.gw import distance_matrix, gw_matrix, gw_pair, joint_matrix, round_to_marginals


def _cloud(n=40, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_distance_matrix_normalisation():
    x = _cloud()
    C = distance_matrix(x, "mean")
    off = ~np.eye(len(x), dtype=bool)
    assert C.dtype == np.float64
    assert np.allclose(C, C.T) and np.all(np.diag(C) == 0)
    assert C[off].mean() == pytest.approx(1.0, abs=1e-12)
    assert distance_matrix(x, "max").max() == pytest.approx(1.0, abs=1e-12)
    raw = distance_matrix(x, "none")
    assert raw[0, 1] == pytest.approx(np.linalg.norm(x[0] - x[1]), rel=1e-12)


def test_gw_of_a_cloud_with_itself_and_an_isometric_copy_is_zero():
    rng = np.random.default_rng(1)
    x = _cloud(seed=1)
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    y = (x @ Q)[rng.permutation(len(x))] + rng.standard_normal(5) * 3
    Cx, Cy = distance_matrix(x), distance_matrix(y)
    scale = (Cx**2).mean()
    assert gw_pair(Cx, Cx).value <= 1e-10 * scale
    r = gw_pair(Cx, Cy)
    assert r.value <= 1e-10 * scale
    # the permutation defeats the identity start; the uniform start finds the isometry
    assert r.start == "uniform" and r.values["identity"] > 1e-3


def test_gw_is_nearly_symmetric():
    x, y = _cloud(seed=2), np.tanh(_cloud(seed=3) @ np.ones((5, 3)))
    a = gw_pair(distance_matrix(x), distance_matrix(y)).value
    b = gw_pair(distance_matrix(y), distance_matrix(x)).value
    assert a > 1e-3
    assert abs(a - b) <= 1e-2 * max(a, b)


def test_value_from_a_given_start_matches_pot():
    x, y = _cloud(seed=4), _cloud(seed=5, d=3)
    C1, C2 = distance_matrix(x), distance_matrix(y)
    n = len(x)
    G0 = np.random.default_rng(0).random((n, n))
    G0 = round_to_marginals(G0, ot.unif(n), ot.unif(n))
    ours = gw_pair(C1, C2, starts=[G0]).value
    pot = float(ot.gromov.gromov_wasserstein2(C1, C2, ot.unif(n), ot.unif(n), G0=G0))
    assert pot > 0
    assert ours == pytest.approx(pot, rel=1e-8)


def test_identity_start_never_worse_when_kept_and_keeps_the_lower_value():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((50, 4))
    layers = [z]
    for _ in range(3):
        layers.append(np.tanh(layers[-1] @ rng.standard_normal((layers[-1].shape[1], 8))))
    D = [distance_matrix(f) for f in layers]
    M = gw_matrix(D[:2], D[2:], n_jobs=1)
    ident, unif = M.start_values["identity"], M.start_values["uniform"]
    assert np.all(M.values <= ident + 1e-15) and np.all(M.values <= unif + 1e-15)
    assert np.allclose(M.values, np.minimum(ident, unif))
    assert set(M.start.ravel()) <= {"identity", "uniform"}
    # on neighbouring layers of one chain the identity start reaches the lower value
    assert M.start[1, 0] == "identity"


def test_joint_matrix_layout_and_parallel_equals_serial():
    rng = np.random.default_rng(7)
    feats = [rng.standard_normal((30, d)) for d in (3, 4, 5, 6)]
    D = [distance_matrix(f) for f in feats]
    J1 = joint_matrix(D[:2], D[2:], n_jobs=1)
    J2 = joint_matrix(D[:2], D[2:], n_jobs=2)
    assert J1.values.shape == (4, 4)
    assert np.allclose(J1.values, J1.values.T) and np.all(np.diag(J1.values) == 0)
    assert np.allclose(J1.values, J2.values, rtol=1e-12, atol=0)
    G = gw_matrix(D[:2], D[2:], n_jobs=1).values
    assert np.allclose(J1.values[:2, 2:], G, rtol=1e-12)


def test_a_killed_joint_matrix_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """With a checkpoint, a run killed after some pairs solves only the others when started
    again, and the matrix (values, winning starts, every start's value) is the uninterrupted
    one's, bit for bit."""
    from dilt.analysis import gw

    rng = np.random.default_rng(9)
    D = [distance_matrix(rng.standard_normal((20, d))) for d in (2, 3, 4, 5, 6, 7)]
    want = joint_matrix(D[:3], D[3:], n_jobs=1)
    monkeypatch.setattr(gw, "CHECKPOINT_PAIRS", 4)
    real, solved = gw._run, []

    def killed_after_two_chunks(dists, pairs, *a):
        if len(solved) == 8:
            raise KeyboardInterrupt
        solved.extend(pairs)
        return real(dists, pairs, *a)

    ckpt = tmp_path / "pairs.json"
    monkeypatch.setattr(gw, "_run", killed_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        joint_matrix(D[:3], D[3:], n_jobs=1, checkpoint=ckpt)
    assert len(solved) == 8 and ckpt.exists()
    first = list(solved)
    solved.clear()
    monkeypatch.setattr(gw, "_run", lambda dists, pairs, *a: solved.extend(pairs) or real(dists, pairs, *a))
    got = joint_matrix(D[:3], D[3:], n_jobs=1, checkpoint=ckpt)
    assert len(solved) == 15 - 8 and not set(solved) & set(first)
    assert np.array_equal(got.values, want.values) and np.array_equal(got.start, want.start)
    assert all(np.array_equal(got.start_values[k], want.start_values[k], equal_nan=True) for k in want.start_values)


def test_round_to_marginals_is_exact_and_keeps_a_valid_coupling():
    rng = np.random.default_rng(8)
    p, q = ot.unif(20), ot.unif(20)
    F = rng.random((20, 20)) * 0.01
    T = round_to_marginals(F, p, q)
    assert np.all(T >= 0)
    assert np.allclose(T.sum(1), p, atol=1e-15) and np.allclose(T.sum(0), q, atol=1e-15)
    exact = np.diag(p)
    assert np.array_equal(round_to_marginals(exact, p, q), exact)


def test_batched_path_on_cpu_torch_gives_exact_polished_values():
    pytest.importorskip("torch")
    from dilt.analysis.gw import gw_pairs_batched

    x = _cloud(n=24, seed=9)
    D = [distance_matrix(x), distance_matrix(np.tanh(x @ np.ones((5, 2)))), distance_matrix(x)]
    res = gw_pairs_batched(D, [(0, 1), (0, 2)], device="cpu", max_iter=20)
    assert res[1].value <= 1e-10
    # polished from a valid coupling: an upper bound no lower than the best exact local minimum
    # reachable, and a real GW value (not the entropic one)
    exact = gw_pair(D[0], D[1], starts=["identity"]).value
    assert res[0].value >= 0 and res[0].value <= exact * 1.5 + 1e-12
    assert set(res[0].values) == {"batched-identity", "batched-uniform"}


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_path_on_gpu_matches_exact_path():  # pragma: no cover - GPU only
    from dilt.analysis.gw import gw_pairs_batched

    rng = np.random.default_rng(10)
    feats = [rng.standard_normal((256, 8)) for _ in range(3)]
    D = [distance_matrix(f) for f in feats]
    res = gw_pairs_batched(D, [(0, 1), (1, 2)], device="cuda")
    for (i, j), r in zip([(0, 1), (1, 2)], res):
        assert r.value <= gw_pair(D[i], D[j]).value * 1.05


def test_gw_cg_matches_pots_solver_from_both_starts():
    """The product-reusing CG reaches exactly POT's value from the identity and uniform starts."""
    import ot

    from dilt.analysis.gw import distance_matrix, gw_cg

    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 5))
    y = np.tanh(x @ rng.standard_normal((5, 7))) + 0.1 * rng.standard_normal((60, 7))
    C1, C2 = distance_matrix(x), distance_matrix(y)
    p = ot.unif(60)
    for G0 in (None, np.diag(p)):
        ours, G = gw_cg(C1, C2, G0)
        _, log = ot.gromov.gromov_wasserstein(C1, C2, p, p, "square_loss", symmetric=True, G0=G0,
                                              log=True, max_iter=10000)
        assert ours == pytest.approx(float(log["gw_dist"]), rel=1e-10)
        assert np.allclose(G.sum(1), p) and np.allclose(G.sum(0), p)


def test_the_linear_step_gets_an_iteration_cap_that_grows_with_the_problem(monkeypatch):
    """POT's network simplex stops at 100,000 iterations by default, short of the optimum for
    large probes; every linear step of the solver gets :func:`emd_iterations` instead."""
    import ot.optim

    from dilt.analysis.gw import distance_matrix, emd_iterations, gw_cg

    assert emd_iterations(96, 96) == 100_000 and emd_iterations(2048, 2048) == 10 * 2048 ** 2
    caps = []
    real = ot.optim.emd

    def recording(a, b, M, numItermax=100_000, **kw):
        caps.append(numItermax)
        return real(a, b, M, numItermax, **kw)
    monkeypatch.setattr(ot.optim, "emd", recording)
    rng = np.random.default_rng(0)
    C = distance_matrix(rng.standard_normal((120, 3)))
    gw_cg(C, distance_matrix(rng.standard_normal((120, 4))))
    assert caps and set(caps) == {emd_iterations(120, 120)} == {144_000}
