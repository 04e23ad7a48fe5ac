"""Neuron dynamics against spike trains computed by hand."""

import pytest
import torch

from sdm.errors import SDMError
from sdm.neurons import IFNeuron, LIFNeuron, reset_neurons


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
    neuron.threshold_scale = 2.0
    assert neuron(x).count_nonzero().item() == base // 2


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


def test_counters():
    neuron = IFNeuron(1.0)
    neuron.record = True
    neuron(torch.tensor([[0.6, 2.0], [0.6, 2.0]]))
    assert (neuron.spike_count, neuron.neuron_steps) == (3, 4)
    neuron.reset_stats()
    assert neuron.spike_count == 0


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
            a = fast.constant_response(x, T)
            b = slow(x.unsqueeze(0).expand(T, *x.shape))
        assert torch.allclose(a, b, atol=1e-6)
        assert torch.allclose(fast.v, slow.v, atol=1e-5)
        fast.reset()
        with torch.no_grad():
            assert torch.allclose(fast.constant_rate(x, T), b.mean(0), atol=1e-6)


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
