"""ReviewKD against mdistiller (megvii-research/mdistiller, commit a08d46f).

The pinned numbers were computed once, in float64, by running ``mdistiller/distillers/ReviewKD.py``
(``ReviewKD.forward_train``: its ABFs and ``hcl_loss``, train mode, REVIEWKD_WEIGHT 5, WARMUP_EPOCHS 20,
epoch 5) on the features of ``features()`` below, with every ABF parameter set by ``fill_abf()``
(same parameter names in both implementations) and the in/out channel and shape lists of each case.
Only the numbers are kept here. The extra-parameter counts of the real pairs are the reference's
``get_extra_parameters()`` for mdistiller's resnet32x4 -> resnet8x4 config and for the lists of the
authors' ``CIFAR-100/model/reviewkd.py::build_review_kd`` (dvlab-research/ReviewKD).
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers import ReviewKD
from distillbench.distillers.base import Batch
from distillbench.distillers.reviewkd import hcl_loss
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput, create_model, probe_shapes

WEIGHT, WARMUP, EPOCH = 5.0, 20, 5
# Feature shapes (batch of 2) per case: the student's feats, the teacher's (stem first, pooled last).
CASES = {
    "same_size": ([(3, 16, 16), (4, 16, 16), (6, 8, 8), (8, 4, 4), (8,)],
                  [(3, 16, 16), (5, 16, 16), (7, 8, 8), (9, 4, 4), (9,)]),
    "student_smaller": ([(3, 16, 16), (6, 8, 8), (8, 4, 4), (10, 2, 2), (10,)],
                        [(3, 16, 16), (4, 16, 16), (5, 8, 8), (6, 4, 4), (6,)]),
    "five_levels_extra_student_stem": ([(3, 16, 16), (2, 16, 16), (4, 8, 8), (6, 4, 4), (8, 2, 2), (8, 2, 2), (12,)],
                                       [(3, 8, 8), (3, 8, 8), (5, 4, 4), (7, 2, 2), (7, 2, 2), (6,)]),
}
# case: loss; d loss / d student feats[i] (first 4 entries, sum of |.|); per ABF level (0 = shallowest)
# and parameter: (first 2 gradient entries, sum of |grad|); sums of the ABF BatchNorms' running stats.
REFERENCE = {
    "same_size": {
        "loss": 9.990893851069313,
        "feature_grads": {
            1: ([0.0006077438109721644, 0.000796581455851674,
                 0.0007565756127221029, 0.00041651248261859836], 0.6010423064313917),
            2: ([0.0004465012757218691, 0.0002661204031667326,
                 0.0002466640661510308, 0.0003690755974796731], 1.543644106342103),
            3: ([-0.02426066954960769, 0.011966509173211388,
                 0.009340880260360989, 0.019537574986475598], 9.074763538576288),
            4: ([0.00033153697155749435, 0.00026092148976885975,
                 0.00011871284088614054, -5.6068932813948866e-05], 0.0037609582797054637),
        },
        "param_grads": {
            "0.att_conv.0.bias": ([-0.044475300610636224, 0.03862336377421356], 0.08309866438484978),
            "0.att_conv.0.weight": ([-0.0029787974017584998, 0.007553557094428438], 0.3750562834325557),
            "0.conv1.0.weight": ([-0.00040453720480162136, -0.0026224604752803594], 0.3250659584725787),
            "0.conv1.1.bias": ([-0.024603384112434925, -0.04286396363817675], 0.2147040330368039),
            "0.conv1.1.weight": ([0.025484671656086193, 0.04123218673144664], 0.21042803971300633),
            "0.conv2.0.weight": ([-0.002400972835863715, -0.00435468292318433], 3.7303684661892076),
            "0.conv2.1.bias": ([-0.059105585120767704, 0.06589266058355593], 0.7641697908945465),
            "0.conv2.1.weight": ([0.39942625918459723, 0.4194533467667079], 2.034501659851921),
            "1.att_conv.0.bias": ([0.0004914273564198481, 0.0059284812936489595], 0.006419908650068808),
            "1.att_conv.0.weight": ([0.0004954359226884248, -0.00021542939420597456], 0.3977599573706905),
            "1.conv1.0.weight": ([-0.020040929491293855, -0.005900268595707095], 0.40228150106412086),
            "1.conv1.1.bias": ([4.610952478731941e-05, 0.008138355632409246], 0.05584268887331158),
            "1.conv1.1.weight": ([0.004150673366071967, -0.012790224437328664], 0.07128928670244891),
            "1.conv2.0.weight": ([0.0006390418886572459, -4.953559091274639e-05], 2.002846816561543),
            "1.conv2.1.bias": ([-0.04710292919097232, -0.12639776522537582], 0.7186009252861825),
            "1.conv2.1.weight": ([0.11052854855974442, 0.10653229009511045], 1.4053115643386267),
            "2.att_conv.0.bias": ([-0.0002923962965419467, 0.02004253405147596], 0.020334930348017907),
            "2.att_conv.0.weight": ([0.021202015310365453, -0.02249280348367895], 0.5697988488486492),
            "2.conv1.0.weight": ([-0.05168904293044776, 0.011710820563495324], 3.2177596558198367),
            "2.conv1.1.bias": ([-0.024583218560553656, -0.014854799097188084], 0.19455994559321665),
            "2.conv1.1.weight": ([0.008994354561218717, -0.0072278525662308486], 0.10836403652563695),
            "2.conv2.0.weight": ([-0.04655878358553657, -0.062025694957387044], 10.149507328823075),
            "2.conv2.1.bias": ([0.15859094690132247, 0.15846822477107314], 0.9628052245746016),
            "2.conv2.1.weight": ([0.25202640802642134, 0.1442529568887567], 1.2382705310612487),
            "3.conv1.0.weight": ([0.0002545766801696028, 1.5478833290141726e-06], 0.001976811966527246),
            "3.conv1.1.bias": ([0.013138611135405109, -0.006083531843821701], 0.16275886987640026),
            "3.conv1.1.weight": ([-0.017092778392928006, -0.009351672961887268], 0.12175686280687678),
            "3.conv2.0.weight": ([0.0, 0.0], 0.01392093229187468),
            "3.conv2.1.bias": ([0.06018415294566193, -0.03998786732995102], 1.186987903838289),
            "3.conv2.1.weight": ([0.6172563012779277, 0.5314300175240425], 4.121994180809151),
        },
        "bn_running_mean_sum": 0.23188988068894945,
        "bn_running_var_sum": 78.62296538937653,
        "extra_parameters": 2594,
    },
    "student_smaller": {
        "loss": 9.337033505572592,
        "feature_grads": {
            1: ([0.0027059365950864262, 0.010701534601315272,
                 0.008377107030487385, 0.003401087463691835], 5.380048516614712),
            2: ([0.02733753135618925, 0.003229291566966597,
                 -0.01136017922911465, -0.010627485706890233], 2.036557043090708),
            3: ([-0.017291953741037397, 0.058004669366289285,
                 -0.09828143925469662, 0.004318504561093263], 7.666992910173565),
            4: ([0.00020661039636007256, 8.323206877208971e-05,
                 -6.298396149981297e-05, -0.00019191808339422294], 0.003257889654869662),
        },
        "param_grads": {
            "0.att_conv.0.bias": ([0.026372861224703018, -0.03073958881609637], 0.05711245004079939),
            "0.att_conv.0.weight": ([0.020588454778435558, -0.019919579506983833], 0.7402319207664878),
            "0.conv1.0.weight": ([-0.39924009168285784, -0.23048433516548572], 23.91301866661012),
            "0.conv1.1.bias": ([0.0327095021065934, -0.029880468083624597], 0.3161706459334652),
            "0.conv1.1.weight": ([0.08239813647720724, -0.027643952905356036], 0.41458752088738493),
            "0.conv2.0.weight": ([-0.0028528289729567325, 0.001946081650509262], 8.413965334004782),
            "0.conv2.1.bias": ([-0.07971468464149477, 0.08447792359149085], 0.6748514706141561),
            "0.conv2.1.weight": ([0.6468594860443339, 0.6413748118473473], 2.4083898120474148),
            "1.att_conv.0.bias": ([-0.02409590927152754, 0.005895865280619254], 0.029991774552146792),
            "1.att_conv.0.weight": ([0.011824169109552078, -0.032745151915027464], 0.3137784014140993),
            "1.conv1.0.weight": ([-0.05313094619802197, 0.0035373012841928494], 2.989404519847567),
            "1.conv1.1.bias": ([-0.0010846766658343084, -0.006461405642377894], 0.20814089482355042),
            "1.conv1.1.weight": ([-0.029390158737952313, -0.016311285738905498], 0.17436655666775502),
            "1.conv2.0.weight": ([-0.0021417003836775405, -0.0033253398503733157], 2.2535639941152543),
            "1.conv2.1.bias": ([-0.06434850660532845, -0.1745895993334062], 0.8636107254197588),
            "1.conv2.1.weight": ([0.15352632151819234, 0.15229836798254556], 1.1634219166124256),
            "2.att_conv.0.bias": ([-0.05292315707433744, 0.05570434468330985], 0.1086275017576473),
            "2.att_conv.0.weight": ([-0.0010762172200246937, -0.003909909478697328], 1.1691162020103194),
            "2.conv1.0.weight": ([0.019371401191308132, -0.04609038909082687], 21.267009041258568),
            "2.conv1.1.bias": ([0.00010811525999888938, 0.021531100456613876], 0.2802259149824314),
            "2.conv1.1.weight": ([0.03221397856239385, -0.05815153135997518], 0.4894015925164119),
            "2.conv2.0.weight": ([-0.03350576437419776, -0.012346690799604832], 7.26310558099433),
            "2.conv2.1.bias": ([0.11729291561834271, 0.21771660625409284], 0.7413430952452255),
            "2.conv2.1.weight": ([0.7069910889826321, 0.32213093587854397], 2.1870432892409024),
            "3.conv1.0.weight": ([5.846346625967085e-10, -9.526673932638277e-08], 0.002664625382311052),
            "3.conv1.1.bias": ([-0.05265961962239517, -0.036532715582120096], 0.3134284482046764),
            "3.conv1.1.weight": ([0.004361952416321731, 0.06940021344638754], 0.38928323891694516),
            "3.conv2.0.weight": ([0.0, 0.0], 0.00046900839342658133),
            "3.conv2.1.bias": ([0.23439116660358877, 0.015075667221227579], 1.9044507381433902),
            "3.conv2.1.weight": ([0.7819261607908261, -0.23305339373937753], 2.4810800727916233),
        },
        "bn_running_mean_sum": -0.17041216208890672,
        "bn_running_var_sum": 59.350083684830864,
        "extra_parameters": 2478,
    },
    "five_levels_extra_student_stem": {
        "loss": 12.769484602162034,
        "feature_grads": {
            2: ([-0.020350845933963208, -0.02404884919682706,
                 -0.019891048088599955, -0.021233834270975617], 11.206653324753015),
            3: ([-0.002462203380351894, -0.005672916962656969,
                 -0.011945002200920853, -0.010610643994413589], 2.199848317354195),
            4: ([0.3225667659467178, 0.3041028831730303,
                 -0.314878746193901, -0.6155470954998193], 18.169561139139546),
            5: ([0.16330970561371022, 0.058849812341910744,
                 -0.30180893485739485, -0.3359587764219608], 12.375718503812674),
            6: ([-0.005916677599061594, -0.0024365416769931494,
                 0.0017121468260344328, 0.005391046451516978], 0.12306291164445232),
        },
        "param_grads": {
            "0.att_conv.0.bias": ([-0.05278547517282025, 0.08075463758386818], 0.13354011275668842),
            "0.att_conv.0.weight": ([-0.1639173734832979, 0.09196681230436984], 4.526035922173957),
            "0.conv1.0.weight": ([-0.06147374262920949, 0.05667757660990693], 5.796924975341428),
            "0.conv1.1.bias": ([0.1267160412565712, -0.24597448491561202], 2.3301175591268626),
            "0.conv1.1.weight": ([0.04385824012455255, 0.22158641767244874], 1.4123879297404842),
            "0.conv2.0.weight": ([0.05104135843902841, 0.08324158179320715], 16.88515618493463),
            "0.conv2.1.bias": ([-0.09906724941440387, 0.11745357389616201], 0.5212597321466557),
            "0.conv2.1.weight": ([0.7558530393710424, 0.8900196509931856], 2.6208612250376637),
            "1.att_conv.0.bias": ([-0.09302429536976606, 0.17383320946271025], 0.2668575048324763),
            "1.att_conv.0.weight": ([-0.0775659228045343, 0.01645776976024478], 2.06232688943161),
            "1.conv1.0.weight": ([-0.20852696149577649, 0.02961384419129573], 4.641784489335993),
            "1.conv1.1.bias": ([0.07274441567236037, -0.14198533631047494], 1.3219306776733362),
            "1.conv1.1.weight": ([-0.18381673292651993, 0.2741499228353288], 1.7295364871398247),
            "1.conv2.0.weight": ([0.02024385722705856, 0.01386573233203499], 16.63031396929163),
            "1.conv2.1.bias": ([0.052163312122110575, -0.24500921987746357], 0.8786603032333862),
            "1.conv2.1.weight": ([0.12391210286407682, 0.43140667907511315], 1.870552234491391),
            "2.att_conv.0.bias": ([0.23484687248805208, -0.05227883578738311], 0.2871257082754352),
            "2.att_conv.0.weight": ([-0.0853094539456288, -0.08043671489517462], 1.5613791719377326),
            "2.conv1.0.weight": ([-0.37945464990263744, 0.4977441519853143], 92.41393163819016),
            "2.conv1.1.bias": ([0.11889576158527046, 0.08621726202529492], 0.788865020034323),
            "2.conv1.1.weight": ([-0.35896099870999554, -0.45214435975375084], 3.2572516606620368),
            "2.conv2.0.weight": ([-0.007091402283620124, -0.0100084028063941], 15.442279061846216),
            "2.conv2.1.bias": ([0.36368404511217683, 0.07589797212105734], 1.1570263444692068),
            "2.conv2.1.weight": ([0.22111000643510975, 0.47189903157205637], 1.4540622595725263),
            "3.att_conv.0.bias": ([-0.05236695401532501, -0.05048779500390488], 0.10285474901922989),
            "3.att_conv.0.weight": ([-0.3849016695926725, -0.04041434190650082], 6.445277747224155),
            "3.conv1.0.weight": ([-0.8801611671509376, 0.9635615631378001], 51.27385407621882),
            "3.conv1.1.bias": ([-0.11509433014806952, -0.0010114467671213795], 1.0820438852294054),
            "3.conv1.1.weight": ([0.295310483678589, 0.2129332395005657], 2.0349390354262415),
            "3.conv2.0.weight": ([-0.01619620840684838, -0.02302389181174043], 30.174106974789836),
            "3.conv2.1.bias": ([-0.22934234684292454, -0.4638513800346453], 1.7907627714681202),
            "3.conv2.1.weight": ([0.5977162948387466, 0.3087808743999208], 2.5039355977852544),
            "4.conv1.0.weight": ([0.012033187868946584, -0.007728569052088418], 0.22545742665968477),
            "4.conv1.1.bias": ([-0.1982497066775144, 0.0377634006052483], 1.669219178866819),
            "4.conv1.1.weight": ([11.123680543614958, 3.301592326265518], 95.08785684921958),
            "4.conv2.0.weight": ([0.0, 0.0], 267.48211720048624),
            "4.conv2.1.bias": ([-0.25185577214758453, -0.2255025651463843], 1.3302770052061756),
            "4.conv2.1.weight": ([0.9622024787146419, 0.19730477994063242], 3.2438177163287425),
        },
        "bn_running_mean_sum": 1.1099160704638633,
        "bn_running_var_sum": 83.86961053458158,
        "extra_parameters": 3856,
    },
}


def pattern(shape: tuple[int, ...], phase: float, freq: float = 0.37, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def fill_abf(module: torch.nn.Module, level: int) -> None:
    """Parameters in name order get sine patterns of increasing phase; BN weights are centred on 1."""
    with torch.no_grad():
        for k, (name, p) in enumerate(sorted(module.named_parameters())):
            p.copy_(pattern(tuple(p.shape), 10 * level + k, freq=0.53, scale=0.5))
            if name.endswith("1.weight"):  # conv1.1 and conv2.1, the BatchNorms
                p.add_(1.0)


def features(case: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    s_shapes, t_shapes = CASES[case]
    student = [pattern((2, *s), 0.3 + i, freq=0.71).requires_grad_() for i, s in enumerate(s_shapes)]
    teacher = [pattern((2, *s), 1.1 + i, freq=0.29, scale=1.5) for i, s in enumerate(t_shapes)]
    return student, teacher


def outputs(feats: list[torch.Tensor]) -> ModelOutput:
    return ModelOutput(torch.zeros(2, 10, dtype=feats[0].dtype), feats)


def batch() -> Batch:
    return Batch(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), torch.arange(2))


def built(case: str, **kwargs) -> ReviewKD:
    s_shapes, t_shapes = CASES[case]
    distiller = ReviewKD(weight=WEIGHT, warmup_epochs=WARMUP, student_relu=False, **kwargs)
    distiller.setup(outputs([torch.zeros(2, *s) for s in s_shapes]),
                    outputs([torch.zeros(2, *s) for s in t_shapes]), torch.zeros(0))
    return distiller


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_gradients_equal_reference(case):
    want = REFERENCE[case]
    distiller = built(case).double().train()
    for level, abf in enumerate(distiller.abfs):
        fill_abf(abf, level)
    f_s, f_t = features(case)
    terms = distiller(outputs(f_s), outputs(f_t), batch(), EPOCH)
    assert list(terms) == ["reviewkd"]
    terms["reviewkd"].backward()
    assert terms["reviewkd"].item() == pytest.approx(want["loss"], rel=1e-9)
    used = {i for i, f in enumerate(f_s) if f.grad is not None}
    assert used == set(want["feature_grads"])
    for i, (first, abs_sum) in want["feature_grads"].items():
        assert f_s[i].grad.flatten()[:4].tolist() == pytest.approx(first, rel=1e-7, abs=1e-15), i
        assert f_s[i].grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9), i
    params = {f"{level}.{name}": p for level, abf in enumerate(distiller.abfs) for name, p in abf.named_parameters()}
    assert set(params) == set(want["param_grads"])
    for name, (first, abs_sum) in want["param_grads"].items():
        assert params[name].grad.flatten()[:2].tolist() == pytest.approx(first, rel=1e-7, abs=1e-15), name
        assert params[name].grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9), name
    bns = [m for m in distiller.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert sum(m.running_mean.sum().item() for m in bns) == pytest.approx(want["bn_running_mean_sum"], rel=1e-9)
    assert sum(m.running_var.sum().item() for m in bns) == pytest.approx(want["bn_running_var_sum"], rel=1e-9)
    assert distiller.extra_parameter_count() == want["extra_parameters"]


def test_warmup_is_linear_in_the_one_based_epoch_then_flat():
    distiller = built("same_size").double()
    for level, abf in enumerate(distiller.abfs):
        fill_abf(abf, level)
    f_s, f_t = features("same_size")
    full = REFERENCE["same_size"]["loss"] * WARMUP / EPOCH
    for epoch, factor in [(1, 1 / 20), (20, 1.0), (240, 1.0)]:
        loss = distiller(outputs(f_s), outputs(f_t), batch(), epoch)["reviewkd"]
        assert loss.item() == pytest.approx(factor * full, rel=1e-9), epoch


def test_hcl_pools_only_to_sizes_below_the_map_height():
    f_s, f_t = pattern((2, 3, 4, 4), 0.1), pattern((2, 3, 4, 4), 0.9)
    pool = torch.nn.functional.adaptive_avg_pool2d
    mse = torch.nn.functional.mse_loss
    want = (mse(f_s, f_t) + mse(pool(f_s, 2), pool(f_t, 2)) / 2 + mse(pool(f_s, 1), pool(f_t, 1)) / 4) / 1.75
    assert hcl_loss([f_s], [f_t]).item() == pytest.approx(want.item(), rel=1e-12)
    assert hcl_loss([f_s], [f_t], levels=()).item() == pytest.approx(mse(f_s, f_t).item(), rel=1e-12)


def test_loss_is_float32_for_half_precision_features():
    f_s, f_t = pattern((2, 3, 8, 8), 0.1), pattern((2, 3, 8, 8), 0.9)
    loss = hcl_loss([f_s.bfloat16()], [f_t.bfloat16()])
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(hcl_loss([f_s], [f_t]).item(), rel=2e-2)


@pytest.mark.parametrize(
    ("teacher", "student", "levels", "params"),
    [
        # mdistiller's configs/cifar100/reviewkd.yaml (cfg.py lists): IN/OUT_CHANNELS [64,128,256,256].
        ("resnet32x4", "resnet8x4", [(64, 64, 32), (128, 128, 16), (256, 256, 8), (256, 256, 1)], 1_808_774),
        # build_review_kd, 'mobile' with a vgg teacher: in [12,16,48,160,1280], out [128,256,512,512,512].
        ("vgg13", "MobileNetV2",
         [(12, 128, 16), (16, 256, 8), (48, 512, 4), (160, 512, 4), (1280, 512, 1)], 9_640_712),
    ],
)
def test_abfs_are_sized_from_the_real_networks(teacher, student, levels, params):
    torch.manual_seed(0)
    s = probe_shapes(create_model(student, num_classes=100), (2, 3, 32, 32), preact=True)
    t = probe_shapes(create_model(teacher, num_classes=100), (2, 3, 32, 32), preact=True)
    distiller = ReviewKD()
    distiller.setup(s, t, torch.zeros(0))
    got = [(abf.conv1[0].in_channels, abf.conv2[0].out_channels, abf.out_size[0]) for abf in distiller.abfs]
    assert got == levels
    assert [abf.att_conv is not None for abf in distiller.abfs] == [True] * (len(levels) - 1) + [False]
    assert distiller.extra_parameter_count() == params


@pytest.mark.parametrize("arch", ["resnet8x4", "vgg8", "ShuffleV1"])
def test_relu_of_the_preact_taps_is_the_post_activation_map(arch):
    # What student_relu=True relies on to give these students mdistiller's post-activation maps.
    torch.manual_seed(0)
    model = create_model(arch, num_classes=100).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        post, _ = model(x, is_feat=True)
        pre, _ = model(x, is_feat=True, preact=True)
    assert all(torch.equal(torch.relu(p), q) for p, q in zip(pre, post, strict=True))


def test_a_teacher_with_more_levels_than_the_student_is_refused():
    s = outputs([torch.zeros(2, 4, 4, 4), torch.zeros(2, 4)])
    t = outputs([torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 4, 4), torch.zeros(2, 4)])
    with pytest.raises(ConfigError, match="ReviewKD"):
        ReviewKD().setup(s, t, torch.zeros(0))


def test_forward_before_setup_is_an_error():
    f_s, f_t = features("same_size")
    with pytest.raises(RuntimeError, match="setup"):
        ReviewKD()(outputs(f_s), outputs(f_t), batch(), 1)


def test_warmup_must_be_positive():
    with pytest.raises(ConfigError, match="warmup"):
        ReviewKD(warmup_epochs=0)
