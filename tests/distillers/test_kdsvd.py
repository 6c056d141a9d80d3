"""KDSVD against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running ``distiller_zoo/KDSVD.py::KDSVD`` on the
stage lists of ``stages()`` below and summing its per-pair list, as ``helper/loops.py`` does with
``feat[1:-1]``. Only the numbers are kept here.

Singular vectors are defined up to sign, and this loss is not sign-invariant: the RBF compares
element-wise differences of vectors from two stages, so flipping one teacher vector changes it.
The student's signs do not matter (each of its vectors is re-signed to agree with the teacher's), the
teacher's are whatever LAPACK returns. Both implementations take them from the same torch routine
(the reference's ``torch.svd`` is ``torch.linalg.svd`` underneath), so the pins hold in the
reference's own convention on the CPU; another LAPACK build or a GPU may pick other signs and so
another value, for the reference exactly as here.
"""

from __future__ import annotations

import pytest
import torch

from distillbench.distillers.base import Batch
from distillbench.distillers.kdsvd import KDSVD, kdsvd_loss
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput, create_model, probe_shapes

# Same channels stage by stage (the vectors live in channel space); spatial sizes may differ.
SHAPES = ([(2, 4, 8, 8), (2, 6, 4, 4), (2, 5, 4, 4)], [(2, 4, 4, 4), (2, 6, 8, 8), (2, 5, 2, 2)])

# k: (summed loss, per student stage: (first 4 gradient entries, sum of |grad|))
REFERENCE = {
    1: (
        0.20885342321603928,
        [
            (
                [4.583059821475539e-06, -0.0005166709319709179, -0.0007955099762284205, -0.0004263919775069504],
                0.43697723973174163,
            ),
            (
                [0.0012472624352537274, 0.0012855562534985784, 0.0030292292061142264, 0.0010680964882679074],
                0.7330130509283501,
            ),
            (
                [-0.007166549973568036, 0.0035562130109958253, 0.007210394451053672, -0.0015165549635046823],
                0.6025447545530882,
            ),
        ],
    ),
    2: (
        0.07961129035243583,
        [
            (
                [-0.0006623441613097795, -0.00041102347216883154, 2.0067147163497408e-05, 9.240700489731763e-05],
                0.3268271792235753,
            ),
            (
                [0.0005214759204899415, 0.0005838691085265827, 0.0018088065797824296, 0.0004232413827437917],
                0.43351391151276075,
            ),
            (
                [-0.002000432422975082, 0.001425050904942096, 0.0015187056979428608, -0.0003773883701132971],
                0.2068829324747139,
            ),
        ],
    ),
}


def gaussian(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded normal draws (torch's CPU generator is the same everywhere). Unlike sine patterns, whose
    (H*W) x C matrices have rank 2, they give well-separated singular values, so the SVD's gradient
    (which divides by their squared differences) stays small."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def stages() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    s_shapes, t_shapes = SHAPES
    g_s = [gaussian(s, i).requires_grad_() for i, s in enumerate(s_shapes)]
    g_t = [gaussian(s, 10 + i) for i, s in enumerate(t_shapes)]
    return g_s, g_t


def wrap(maps: list[torch.Tensor]) -> ModelOutput:
    """Stage maps between a stem and a pooled vector, the is_feat layout the distiller slices."""
    b = maps[0].shape[0]
    stem = torch.zeros(b, 2, 8, 8, dtype=torch.float64)
    return ModelOutput(torch.zeros(b, 10, dtype=torch.float64), [stem, *maps, torch.zeros(b, 5, dtype=torch.float64)])


def batch() -> Batch:
    return Batch(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), torch.arange(2))


@pytest.mark.parametrize("k", sorted(REFERENCE))
def test_loss_and_gradients_equal_reference(k):
    want_loss, want_grads = REFERENCE[k]
    g_s, g_t = stages()
    distiller = KDSVD(weight=1.0, k=k)
    distiller.setup(wrap(g_s), wrap(g_t), torch.zeros(0))
    loss = distiller(wrap(g_s), wrap(g_t), batch(), 1)["kdsvd"]
    loss.backward()
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    for g, (first, abs_sum) in zip(g_s, want_grads, strict=True):
        assert g.grad.flatten()[:4].tolist() == pytest.approx(first, rel=1e-6, abs=1e-12)
        assert g.grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-7)


def test_the_term_is_weighted_and_named():
    g_s, g_t = stages()
    terms = KDSVD(weight=2.5)(wrap(g_s), wrap(g_t), batch(), 1)
    assert list(terms) == ["kdsvd"]
    assert terms["kdsvd"].item() == pytest.approx(2.5 * REFERENCE[1][0], rel=1e-9)


def test_student_signs_do_not_matter():
    g_s, g_t = stages()
    flipped = [-g.detach() for g in g_s]
    assert kdsvd_loss(flipped, g_t).item() == pytest.approx(REFERENCE[1][0], rel=1e-9)


def test_extra_teacher_stages_are_dropped_like_zip_does():
    g_s, g_t = stages()
    extra = [*g_t, gaussian((2, 5, 2, 2), 99)]
    assert kdsvd_loss(g_s, extra).item() == kdsvd_loss(g_s, g_t).item()


def test_identical_maps_give_zero():
    g_s, _ = stages()
    maps = [g.detach() for g in g_s]
    assert kdsvd_loss(maps, maps).item() == pytest.approx(0.0, abs=1e-20)


def test_setup_accepts_equal_widths_and_refuses_others():
    torch.manual_seed(0)
    teacher = probe_shapes(create_model("resnet32x4"), (2, 3, 32, 32))
    student = probe_shapes(create_model("resnet8x4"), (2, 3, 32, 32))
    distiller = KDSVD()
    distiller.setup(student, teacher, torch.zeros(0))
    assert distiller.extra_parameter_count() == 0
    other = probe_shapes(create_model("resnet8"), (2, 3, 32, 32))
    with pytest.raises(ConfigError, match=r"same number of channels; feats\[1\]"):
        distiller.setup(other, teacher, torch.zeros(0))


def test_a_single_stage_is_refused_at_setup():
    g_s, g_t = stages()
    with pytest.raises(ConfigError, match="two stage maps"):
        KDSVD().setup(wrap(g_s[:1]), wrap(g_t[:1]), torch.zeros(0))


def test_loss_is_float32_for_half_precision_features():
    g_s, g_t = stages()
    loss = kdsvd_loss([g.detach().bfloat16() for g in g_s], [g.bfloat16() for g in g_t])
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(REFERENCE[1][0], rel=5e-2)
