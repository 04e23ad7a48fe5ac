"""Choosing sites under an energy budget: the greedy passes against hand-computed choices, and the
chosen conversion measured again, independently."""

import pytest
import torch

from calibration import ConversionConfig, calibrate, calibration_pairs, prepare, probe_pairs, spread_subset
from convert import convert
from convert.site_choice import GreedySearch, Measure, choose_sites
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.errors import SDMError
from sdm.models.presets import build_unet
from sdm.snn.energy import energy_report

# An additive toy: each encoder saves energy and adds error, each activation kept analog the reverse.
SAVES = {"e1": (0.2, 0.02), "e2": (0.1, 0.001), "e3": (0.3, 0.06)}     # (energy saved, error added)
COSTS = {"a1": (0.04, 0.01), "a2": (0.1, 0.05), "a3": (5.0, 0.001)}    # (energy added, error removed)


def _toy(encoded, analog):
    energy = 1.0 - sum(SAVES[e][0] for e in encoded) + sum(COSTS[a][0] for a in analog)
    error = 0.1 + sum(SAVES[e][1] for e in encoded) - sum(COSTS[a][1] for a in analog)
    return Measure(energy, error)


def test_over_the_budget_the_cheapest_error_per_energy_saved_goes_first_then_the_slack_is_spent():
    search = GreedySearch(_toy, encoders=["e1", "e2", "e3"], movable=["a1", "a2", "a3"])
    encoded, analog = search.run(frozenset(), frozenset(), budget=0.75)
    # Saved energy per error added: e2 100, e1 10, e3 5. e2 (1.0 -> 0.9), then e1 (-> 0.7) meets 0.75.
    # Then 0.05 to spend. Error removed per energy: a2 0.5 (costs 0.1: too much), a1 0.25 (0.04: fits),
    # keeping e1's input analog 0.1 (0.2: too much), e2's 0.01 (0.1: too much).
    assert encoded == {"e1", "e2"} and analog == {"a1"}
    assert [c["site"] for c in search.changes] == ["e2", "e1", "a1"]
    assert search.current.energy_ratio == pytest.approx(0.74) and search.current.error == pytest.approx(0.111)
    assert search.start == _toy(frozenset(), frozenset())


def test_under_the_budget_only_error_cutting_changes_that_fit_are_taken():
    search = GreedySearch(_toy, encoders=["e1", "e2", "e3"], movable=["a1", "a2", "a3"])
    encoded, analog = search.run(frozenset({"e3"}), frozenset(), budget=0.85)
    # Start 0.7 / 0.16: 0.15 to spend. a2 (0.5 per unit, +0.1) fits; then a1 (+0.04) fits (0.84);
    # keeping e3's input analog (0.2 per unit, +0.3) does not.
    assert encoded == {"e3"} and analog == {"a1", "a2"}
    assert search.current.energy_ratio == pytest.approx(0.84)


def test_an_analog_activation_is_let_spike_when_that_saves_energy_cheapest():
    search = GreedySearch(_toy, encoders=["e3"], movable=["a1", "a2", "a3"])
    encoded, analog = search.run(frozenset(), frozenset({"a1", "a2"}), budget=1.1)
    # Start 1.14 / 0.04. Letting a1 spike saves 0.04 for 0.01 error (4 per unit), a2 0.1 for 0.05 (2),
    # e3 0.3 for 0.06 (5): e3 goes first and meets the budget (0.84); then a slack of 0.26 is spent.
    assert search.changes[0]["site"] == "e3" and search.current.energy_ratio <= 1.1
    assert encoded == {"e3"} and analog == {"a1", "a2"}


def test_the_last_spiking_activation_is_never_kept_analog():
    search = GreedySearch(_toy, encoders=[], movable=["a1", "a2"])  # a3 is not movable here (a readout)
    encoded, analog = search.run(frozenset(), frozenset({"a2"}), budget=10.0)
    assert analog == {"a2"} and search.changes == []  # a1 is the only spiking activation left


@pytest.fixture(scope="module")
def calibrated():
    torch.manual_seed(0)
    unet = build_unet("tiny", act_fn="silu").eval()
    observed = calibrate(prepare(unet, ConversionConfig(T=2, encode_analog=True)),
                         calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, 32), progress=False)
    probes = probe_pairs(unet, DDPM_LINEAR_SCHEDULE, 8)
    return unet, observed.stats().retarget(encode_analog=False), probes, spread_subset(probes)


def _ratio(unet, stats, spread):
    return energy_report(convert(unet, stats), *spread, denoising_steps=3, ann=unet)["energy_ratio_snn_to_ann"]


def test_the_chosen_conversion_meets_a_reachable_budget_and_is_what_it_says(calibrated):
    unet, stats, probes, spread = calibrated
    plain, encoded = _ratio(unet, stats, spread), _ratio(unet, stats.retarget(encode_analog=True), spread)
    assert encoded < plain
    budget = (plain + encoded) / 2
    choice = choose_sites(unet, stats, budget, probes, spread, scheduler_config=DDPM_LINEAR_SCHEDULE, denoising_steps=3,
                          batch_size=8, progress=False)
    assert choice.met and choice.config.encode_sites and not choice.config.encode_analog
    assert choice.start.energy_ratio == pytest.approx(plain, rel=1e-9)
    # The recorded end is the network a conversion of the chosen config builds, measured again.
    assert _ratio(unet, stats.for_config(choice.config), spread) == pytest.approx(choice.end.energy_ratio, rel=1e-9)
    record = choice.record()
    assert record["met"] and record["encode_sites"] == list(choice.config.encode_sites)


def test_statistics_without_encoders_are_refused(calibrated):
    unet, _, probes, spread = calibrated
    plain = calibrate(prepare(unet), calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, 8), progress=False).stats()
    with pytest.raises(SDMError, match="needs statistics of every analog input"):
        choose_sites(unet, plain, 0.5, probes, spread, scheduler_config=DDPM_LINEAR_SCHEDULE, denoising_steps=3,
                     progress=False)
    with pytest.raises(SDMError, match="positive ratio"):
        choose_sites(unet, plain, 0.0, probes, spread, scheduler_config=DDPM_LINEAR_SCHEDULE, denoising_steps=3,
                     progress=False)
