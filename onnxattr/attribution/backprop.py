"""Modified-backprop methods: DeconvNet, Guided Backprop, RectGrad, DeepLIFT (Rescale), and the
LRP composites. Each is one forward and one backward pass of a plan, in which a composite's rules
replace some vjps; DeepLIFT runs input and reference as one stacked batch."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .. import composites as C
from ..composites import Composite, OpType
from ..errors import OptionError
from ..feeds import stack
from ..plan import Plan, logit, one_hot
from ..rules import DeconvNet, GuidedBackprop, RectGrad, Rescale
from .gradients import Feeds, baseline_of, target_at, tile_target
from .options import Instance, Int, Numeric, Option, Real
from .registry import register

if TYPE_CHECKING:
    from ..model import Model
    from ..ops.base import Array
    from ..plan import SeedFn

EPSILON = Option(1e-6, "stabilizer of the epsilon rule on dense layers", Real(0.0, None))
GAMMA = Option(0.25, "weight of the positive parameters", Real(0.0, None))


def _relu(rule: Callable[..., Any], name: str) -> Callable[..., Composite]:
    return lambda **options: Composite([(OpType("Relu"), rule(**options))], name=name)


def _backprop_method(name: str, make: Callable[..., Composite], seed: SeedFn, doc: str,
                     times_input: bool = False, **options: Option) -> None:
    """Register a method whose rules come from the composite ``make(**options)``."""

    def plan(model: Model, **opts: Any) -> Plan:
        return Plan(make(**opts).assign(model.graph), seed, times_input, name)

    def method(model: Model, x: Feeds, target: np.ndarray | None, **opts: Any) -> Array:
        return model.propagate(x, target, plan(model, **opts))[model.input_name]

    method.__doc__ = doc
    method.__name__ = name.replace(".", "_")
    register(name, plan=plan, **options)(method)


_backprop_method(
    "deconvnet", _relu(DeconvNet, "deconvnet"), one_hot,
    """DeconvNet: the gradient with each ReLU's backward replaced by max(R, 0).

    Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks" (as Captum's
    Deconvolution).""",
)
_backprop_method(
    "guided_backprop", _relu(GuidedBackprop, "guided_backprop"), one_hot,
    """Guided Backprop: the gradient with each ReLU's backward followed by max(., 0).

    Springenberg et al. 2015, "Striving for simplicity: the all convolutional net" (as Captum's
    GuidedBackprop).""",
)
_backprop_method(
    "rectgrad", _relu(RectGrad, "rectgrad"), one_hot,
    """RectGrad: at each ReLU only the units with a * R above the q-th percentile pass R; the
    map is x times the rectified gradient.

    Kim et al. 2019, "Why are saliency maps noisy? Cause of and solution to noisy saliency
    maps" (as the authors' code, without its optional border 'padding trick').""",
    times_input=True,
    q=Option(98.0, "percentile of a * R per layer and sample below which relevance is cut", Real(0.0, 100.0)),
)


#: the nonlinearities rescaled: Captum's DeepLift list, and the canonical nodes that SiLU, GELU,
#: hard swish/sigmoid and a squeeze-excitation product become (``onnxattr.canonize``; a Gate's
#: multiplier (y - y0) / (x - x0) goes to its data, its gate branch gets none); every other op keeps
#: its gradient
RESCALED = OpType("Relu", "Elu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Swish", "Gelu", "HardSwish",
                  "HardSigmoid", "Gate")


def _deeplift_composite(eps: float) -> Composite:
    return Composite([(RESCALED, Rescale(eps))], name="deeplift")


@register(
    "deeplift",
    baseline=Option(0.0, "reference input: a number or an array broadcastable to the attributed tensor", Numeric()),
    baseline_token=Option(None, "as integrated_gradients' baseline_token", Int(0, None, none=True)),
    eps=Option(1e-10, "where |x - x0| < eps at a nonlinearity, its gradient is used", Real(0.0, None)),
)
def deeplift(model: Model, x: Feeds, target: np.ndarray | None, baseline: Any, baseline_token: int | None,
             eps: float) -> Array:
    """DeepLIFT (Rescale): R = (x - x0) * m, m the multipliers (y - y0) / (x - x0) of the
    nonlinearities chained by the linear layers' transposes.

    Shrikumar, Greenside & Kundaje 2017, "Learning important features through propagating
    activation differences". As Captum's DeepLift: input and reference run as one stacked batch;
    ReLU, ELU, LeakyReLU, Sigmoid, Tanh and Softplus are rescaled, and so are the canonical
    Swish, Gelu, HardSwish, HardSigmoid and Gate nodes (Captum leaves a GELU module its
    gradient); max pooling, linear layers and every other op keep their gradient. (Not a single-batch backward
    pass, so it registers no ``plan`` for layer-wise analyses.)
    """
    feeds, xp = x, model.xp
    x = feeds[model.input_name]
    b = xp.broadcast_to(baseline_of(model, feeds, baseline, baseline_token), x.shape)
    n = x.shape[0]
    if model.fixed_batch is not None:
        raise OptionError(
            f"deeplift runs input and reference as one batch of {2 * n}, but the model fixes its "
            f"batch size to {model.fixed_batch}; export it with a dynamic batch axis"
        )
    t = target_at(model, feeds, target)
    stacked = stack(feeds, model.input_name, xp.concatenate([x, b]))
    plan = Plan(_deeplift_composite(eps).assign(model.graph), name="deeplift")
    m = model.propagate(stacked, tile_target(t, 2), plan)[model.input_name]
    return (x - b) * m[:n]


def _lrp_method(name: str, make: Callable[..., Composite], doc: str, **options: Option) -> None:
    _backprop_method(name, make, logit, doc, **options)


_lrp_method("lrp.epsilon", lambda epsilon: C.everywhere(C.Epsilon(epsilon), "epsilon"),
            "LRP-epsilon on every Conv and dense layer (Bach et al. 2015).", epsilon=EPSILON)
_lrp_method("lrp.z_plus", lambda: C.everywhere(C.ZPlus(), "z_plus"),
            "z+ on every Conv and dense layer (Montavon et al. 2017, deep Taylor decomposition).")
_lrp_method("lrp.gamma", lambda gamma: C.everywhere(C.Gamma(gamma), "gamma"),
            "LRP-gamma on every Conv and dense layer (Montavon et al. 2019).",
            gamma=GAMMA)
_lrp_method("lrp.alpha1_beta0", lambda: C.everywhere(C.AlphaBeta(1.0, 0.0), "alpha1_beta0"),
            "LRP-alpha1-beta0 on every Conv and dense layer (Bach et al. 2015).")
_lrp_method("lrp.epsilon_plus_flat", C.epsilon_plus_flat,
            "Flat on the first layer, z+ on convolutions, epsilon on dense layers (Zennit's "
            "EpsilonPlusFlat; Kohlbrenner et al. 2020).", epsilon=EPSILON)
_lrp_method("lrp.epsilon_alpha2_beta1", C.epsilon_alpha2_beta1,
            "alpha2-beta1 on convolutions, epsilon on dense layers (Zennit's EpsilonAlpha2Beta1).",
            epsilon=EPSILON)
_lrp_method("lrp.epsilon_alpha2_beta1_flat", C.epsilon_alpha2_beta1_flat,
            "Flat on the first layer, alpha2-beta1 on convolutions, epsilon on dense layers "
            "(Zennit's EpsilonAlpha2Beta1Flat).", epsilon=EPSILON)


def _box(low: Any, high: Any, gamma: float, epsilon: float) -> Composite:
    if low is None or high is None:
        raise OptionError("lrp.epsilon_gamma_box needs low= and high= (the input's bounds: numbers or arrays)")
    return C.epsilon_gamma_box(low, high, gamma, epsilon)


_lrp_method("lrp.epsilon_gamma_box", _box,
            "z^B(low, high) on the first layer, gamma on convolutions, epsilon on dense layers "
            "(Zennit's EpsilonGammaBox; Montavon et al. 2017).",
            low=Option(None, "lowest input value: a number or an array broadcastable to x (required)",
                       Numeric(none=True)),
            high=Option(None, "highest input value: a number or an array broadcastable to x (required)",
                        Numeric(none=True)),
            gamma=Option(0.25, "gamma of the convolutions", Real(0.0, None)), epsilon=EPSILON)


def _custom(composite: Any) -> Composite:
    if not isinstance(composite, Composite):
        raise OptionError("method 'lrp' needs composite=, an onnxattr.composites.Composite mapping layers to rules")
    return composite


_lrp_method("lrp", _custom, "LRP with a custom composite: composite=Composite([(selector, rule), ...]).",
            composite=Option(None, "an onnxattr.composites.Composite (required)", Instance(Composite, none=True)))
