"""What a conversion is judged by: noise-prediction fidelity on probe inputs, and where its error sits.
(What it spends is counted in `convert.accounting`.)"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convert.accounting import site_compute_shares
from sdm.snn.modes import counting


@torch.no_grad()
def eps_fidelity(ann: torch.nn.Module, snn: torch.nn.Module, probes: tuple[torch.Tensor, ...],
                 batch_size: int = 32, weights: torch.Tensor | None = None) -> dict:
    """SNN against ANN noise predictions on probe pairs, and the SNN's firing rate there.

    `probes` is (x_t, t, spread) from `calibration.probe_pairs`: the overall figures use the pairs
    spread evenly over t, the t < 100 figure every probe below t = 100. With `weights` (one per probe,
    e.g. `sdm.diffusion.snr.min_snr_weights`), `eps_rel_mse_weighted` is the spread pairs' relative
    error with each pair's squared error and reference weighted.
    """
    x, t, spread = probes
    device = next(ann.parameters()).device
    cosines, errors, refs = [], [], []
    with counting(snn) as counts:
        for i in range(0, len(x), batch_size):
            xb, tb = x[i : i + batch_size].to(device), t[i : i + batch_size].to(device)
            a = ann(xb, tb, return_dict=False)[0].flatten(1).double()
            s = snn(xb, tb, return_dict=False)[0].flatten(1).double()
            cosines.append(F.cosine_similarity(s, a, dim=1).cpu())
            errors.append((s - a).pow(2).sum(1).cpu())
            refs.append(a.pow(2).sum(1).cpu())
    cos, err, ref = torch.cat(cosines), torch.cat(errors), torch.cat(refs)
    low = t < 100
    weighted = {}
    if weights is not None:
        w = weights.double().cpu()[spread]
        weighted["eps_rel_mse_weighted"] = round(((w * err[spread]).sum() / (w * ref[spread]).sum()).item(), 6)
    return {
        "eps_cosine": round(cos[spread].mean().item(), 5),
        "eps_rel_mse": round((err[spread].sum() / ref[spread].sum()).item(), 6),
        "eps_cosine_t_lt_100": round(cos[low].mean().item(), 5) if low.any() else None,
        "eps_rel_mse_t_lt_100": round((err[low].sum() / ref[low].sum()).item(), 6) if low.any() else None,
        "probes": {"spread_over_t": int(spread.sum()), "t_lt_100": int(low.sum())},
        "firing_rate": round(counts.rate(), 5),
        **weighted,
    }


def site_sensitivity(ann: torch.nn.Module, snn, probes: tuple[torch.Tensor, ...], batch_size: int = 32) -> list[dict]:
    """Where the conversion error sits: for every spiking site, the eps error of the SNN with only that
    site spiking (every other site analog), beside the site's share of the spiking compute; worst first."""
    shares = site_compute_shares(snn)
    rows = []
    for name in snn.spiking_sites():
        with snn.spiking_only(name):
            fidelity = eps_fidelity(ann, snn, probes, batch_size=batch_size)
        rows.append({"site": name, "eps_rel_mse": fidelity["eps_rel_mse"],
                     "eps_rel_mse_t_lt_100": fidelity["eps_rel_mse_t_lt_100"],
                     "eps_cosine": fidelity["eps_cosine"], "spiking_compute_share": round(shares[name], 5)})
    return sorted(rows, key=lambda r: -r["eps_rel_mse"])
