"""Neuron dynamics against spike trains computed by hand."""

import pytest
import torch

from sdm.errors import SDMError
from sdm.snn.coding import SpikeCode
from sdm.snn.compiled import compile_neurons, compiled_steps
from sdm.snn.modes import counting, scaled_thresholds
from sdm.snn.neurons import IFNeuron, LIFNeuron, reset_neurons


def _run(neuron, inputs):
    return neuron(torch.tensor(inputs, dtype=torch.float32).view(-1, 1)).view(-1).tolist()


def test_if_reset_by_subtraction():
    # v: 0.6, 1.2 -> fire (0.2), 0.8, 1.4 -> fire (0.4)
    assert _run(IFNeuron(1.0), [0.6, 0.6, 0.6, 0.6]) == [0, 1, 0, 1]


def test_half_threshold_initial_potential_rounds():
    # fires at v >= 0.5: 0.6 -> fire (-0.4), 0.2, 0.8 -> fire (-0.2), 0.4
    assert _run(IFNeuron(1.0, v_init=0.5), [0.6, 0.6, 0.6, 0.6]) == [1, 0, 1, 0]


def test_output_is_spike_times_threshold():
    assert _run(IFNeuron(2.5), [3.0, 0.0, 2.0]) == [2.5, 0.0, 2.5]


def test_lif_leaks():
    # decay 1 - 1/tau = 0.5: v = 0.8, 0.4 + 0.8 = 1.2 -> fire (0.2), 0.1 + 0.8 = 0.9
    assert _run(LIFNeuron(1.0, tau=2.0), [0.8, 0.8, 0.8]) == [0, 1, 0]


def test_reset_to_value_versus_subtraction():
    assert _run(IFNeuron(1.0), [1.5, 0.6]) == [1, 1]  # keeps the residue 0.5
    assert _run(IFNeuron(1.0, reset="value"), [1.5, 0.6]) == [1, 0]  # back to 0


def test_signed_neuron_retracts_then_goes_negative():
    # step 1: v 1.2 -> +1 (0.2, net +1); step 2: -1.3, net > 0 so it fires -theta (v -0.3, net 0);
    # step 3: -0.9 <= -theta_n -> -0.5 (v -0.4, net -1); step 4: -0.2, nothing.
    neuron = IFNeuron(1.0, neg_threshold=0.5, signed=True)
    assert _run(neuron, [1.2, -1.5, -0.6, 0.2]) == pytest.approx([1.0, -1.0, -0.5, 0.0])


def test_unsigned_neuron_fires_no_negative_spikes_but_remembers_negative_input():
    neuron = IFNeuron(1.0)
    assert _run(neuron, [-3.0, -3.0, 5.0]) == [0, 0, 0]  # v = -6 + 5 = -1
    assert neuron.v.item() == -1.0


def test_threshold_scale_lowers_the_rate():
    x = torch.full((8, 1), 0.5)
    neuron = IFNeuron(1.0)
    base = neuron(x).count_nonzero().item()
    neuron.reset()
    with scaled_thresholds(neuron, 2.0):
        assert neuron(x).count_nonzero().item() == base // 2
    assert neuron.threshold_scale == 1.0  # restored after the block


def test_state_persists_until_reset():
    neuron = IFNeuron(1.0)
    x = torch.full((1, 1), 0.6)
    assert neuron(x).item() == 0  # v = 0.6 kept
    assert neuron(x).item() == 1  # 1.2 fires
    neuron.reset()
    assert neuron(x).item() == 0
    model = torch.nn.Sequential(IFNeuron(1.0))
    model(x)
    reset_neurons(model)
    assert model[0].v is None


def test_counting_counts_inside_the_block_only():
    neuron, other = IFNeuron(1.0), IFNeuron(1.0)
    model = torch.nn.Sequential(neuron, other)
    with counting(model) as counts:
        neuron(torch.tensor([[0.6, 2.0], [0.6, 2.0]]))  # spikes at steps 2 and 1, 2: three in four
        other(torch.tensor([[0.1, 0.1]]))
    assert (counts.spikes([neuron]), counts.neuron_steps([neuron])) == (3, 4)
    assert counts.rate() == 3 / 6 and counts.rate([other]) == 0.0
    neuron.reset()
    neuron(torch.tensor([[2.0]]))  # outside the block: not counted
    assert counts.spikes() == 3 and neuron.counter is None


def test_per_channel_thresholds_broadcast_over_channels():
    neuron = IFNeuron(torch.tensor([1.0, 4.0]))
    out = neuron(torch.full((2, 1, 2, 3, 3), 1.0))  # [T, B, C, H, W]
    assert out[:, 0, 0].sum().item() == 2 * 9 and out[:, 0, 1].sum().item() == 0


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("threshold, neg", [(1.3, 0.4), (torch.tensor([0.7, 2.0, 1.1]), torch.tensor([0.2, 0.0, 0.5]))])
def test_closed_form_constant_response_equals_simulation(signed, threshold, neg):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5) * 1.5
    for T in (1, 3, 8):
        fast = IFNeuron(threshold, neg_threshold=neg, signed=signed, v_init=0.5)
        slow = IFNeuron(threshold, neg_threshold=neg, signed=signed, v_init=0.5)
        with torch.no_grad():
            a = fast.constant_response(x, SpikeCode("rate", T))
            b = slow(x.unsqueeze(0).expand(T, *x.shape))
        assert torch.allclose(a, b, atol=1e-6)
        assert torch.allclose(fast.v, slow.v, atol=1e-5)
        fast.reset()
        with torch.no_grad(), counting([fast, slow]) as counts:  # the inference path: in-place passes
            assert torch.allclose(fast.constant_rate(x, SpikeCode("rate", T)), b.mean(0), atol=1e-6)
            slow.reset()
            slow(x.unsqueeze(0).expand(T, *x.shape))
        assert counts.spikes([fast]) == counts.spikes([slow]) and counts.neuron_steps([fast]) == counts.neuron_steps([slow])
        trained = fast.constant_rate(x.requires_grad_(), SpikeCode("rate", T))  # the differentiable path gives the same numbers
        assert trained.requires_grad and torch.allclose(trained, b.mean(0), atol=1e-6)
        x = x.detach()


def test_surrogate_gradient_reaches_inputs_and_thresholds():
    threshold = torch.nn.Parameter(torch.tensor(1.0))
    neuron = IFNeuron(1.0)
    neuron.threshold = threshold
    x = torch.full((4, 3), 0.7, requires_grad=True)
    neuron(x).sum().backward()
    assert x.grad.abs().sum() > 0 and threshold.grad is not None and threshold.grad != 0


def test_bad_settings():
    with pytest.raises(SDMError, match="threshold"):
        IFNeuron(0.0)
    with pytest.raises(SDMError, match="tau"):
        LIFNeuron(1.0, tau=1.0)
    with pytest.raises(SDMError, match="surrogate"):
        IFNeuron(1.0, surrogate="erf")
    with pytest.raises(SDMError, match="v_init"):
        IFNeuron(1.0, v_init=1.0)
    with pytest.raises(SDMError, match=r"\[T, B"):
        IFNeuron(1.0)(torch.ones(3))


def _reference(neuron, x_seq):
    """The per-step autograd loop, which the fast paths must reproduce."""
    theta = neuron._broadcast(neuron.threshold, x_seq[0])
    theta_n = neuron._broadcast(neuron.neg_threshold, x_seq[0])
    zeros = torch.zeros_like(x_seq[0])
    return neuron._simulate_with_autograd(x_seq, zeros, zeros, theta, theta_n)


@pytest.mark.parametrize("kind, settings", [
    ("if", {}), ("lif", {"tau": 2.0}), ("lif", {"tau": 3.0, "reset": "value", "reset_value": 0.1}),
    ("lif", {"tau": 2.0, "reset": "value"}),  # the directly trained SDM's neuron: the mask-product reset
    ("if", {"v_init": 0.5, "surrogate": "sigmoid"}), ("lif", {"surrogate": "rectangle", "alpha": 1.0}),
])
def test_fused_backpropagation_through_time_equals_autograd(kind, settings):
    torch.manual_seed(0)
    make = IFNeuron if kind == "if" else LIFNeuron
    x = (torch.randn(6, 3, 3, 5, 5) * 1.2).requires_grad_()
    weights = torch.randn(6, 3, 3, 5, 5)
    fused = make(torch.tensor([0.7, 1.0, 1.3]), **settings)
    out = fused(x)
    assert out.grad_fn is not None and "FusedFire" in type(out.grad_fn).__name__
    (out * weights).sum().backward()
    fused_grad, x.grad = x.grad.clone(), None
    reference, v, _ = _reference(make(torch.tensor([0.7, 1.0, 1.3]), **settings), x)
    (reference * weights).sum().backward()
    assert torch.equal(out, reference) and torch.equal(fused.v, v)
    assert torch.allclose(fused_grad, x.grad, atol=1e-6) and x.grad.abs().max() > 0.1


@pytest.mark.parametrize("settings", [
    {"neg_threshold": torch.tensor([0.2, 0.0, 0.5]), "signed": True, "v_init": 0.5},
    {"neg_threshold": 0.4, "signed": True}, {"v_init": 0.5}, {"reset": "value", "reset_value": 0.2},
    {"reset": "value"},  # reset to 0: the mask-product path of the inference loop
])
def test_inference_loop_equals_autograd_loop_exactly(settings):
    torch.manual_seed(1)
    neuron = IFNeuron(torch.tensor([0.7, 1.0, 1.3]), **settings)
    x = torch.randn(9, 4, 3, 6, 6) * 1.5
    with torch.no_grad():
        first, v, level = neuron(x), neuron.v, neuron.level
        second = neuron(x)  # carries the state on
    reference, ref_v, ref_level = _reference(neuron, x)
    theta, theta_n = (neuron._broadcast(t, x[0]) for t in (neuron.threshold, neuron.neg_threshold))
    again, _, _ = neuron._simulate_with_autograd(x, ref_v, ref_level, theta, theta_n)
    assert torch.equal(first, reference) and torch.equal(v, ref_v) and torch.equal(second, again)
    assert level is None or torch.equal(level, ref_level)
    assert (first < 0).any() == neuron.signed


@pytest.mark.parametrize("settings", [
    {"neg_threshold": torch.tensor([0.2, 0.0, 0.5]), "signed": True, "v_init": 0.5},
    {"v_init": 0.5}, {"reset": "value", "reset_value": 0.2},
])
def test_compiled_inference_loop_equals_the_eager_one(settings):
    if compiled_steps() is None:
        pytest.skip("torch.compile cannot build kernels on this machine")
    torch.manual_seed(2)
    eager, compiled = (IFNeuron(torch.tensor([0.7, 1.0, 1.3]), **settings) for _ in range(2))
    compile_neurons(torch.nn.Sequential(compiled))
    x = torch.randn(5, 4, 3, 6, 6) * 1.5
    with torch.no_grad():
        for _ in range(2):  # the second call carries the state on
            expected, got = eager(x), compiled(x)
            assert torch.equal(got, expected) and torch.equal(compiled.v, eager.v)
            assert compiled.level is None if not compiled.signed else torch.equal(compiled.level, eager.level)
    assert (expected != 0).any() and (expected < 0).any() == eager.signed
    x.requires_grad_(True)
    assert compiled(x).requires_grad  # training never takes the compiled path
