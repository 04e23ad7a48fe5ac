"""One quality / energy frontier from several `sdm-compare` outputs that were measured alike.

    python -m benchmarks.frontier benchmarks/results/compare/compare.json \\
        benchmarks/results/site_choice/compare-t4-budget0.6-converted/compare.json --out benchmarks/results/frontier

`sdm-compare` scores the rows it is given in one run. Rows drawn by separate runs, at the same N,
sampler, steps, seeds and extractor, meet here on one table and one plot; outputs measured otherwise
are refused, and a row found in several outputs (the ANN) is kept once. The sampling-time column
keeps each run's own timing, which depends on what else the machine was doing then.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchmarks.common import provenance
from convert.commands.compare import compare_table, plot_frontier
from sdm.commands.options import command
from sdm.errors import SDMError
from sdm.io import write_json, write_text

MEASURED_ALIKE = ("num_samples", "sampler", "steps", "seeds", "extractor")


def _read(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise ValueError("no rows")
        return data
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SDMError(f"'{path}' is not an sdm-compare output (compare.json): {type(err).__name__}") from None


def merged_rows(outputs: list[tuple[str, dict]]) -> list[dict]:
    """Every row of `outputs` once, in order; refuses outputs not measured like the first."""
    first_path, first = outputs[0]
    rows, seen = [], set()
    for path, data in outputs:
        differ = [key for key in MEASURED_ALIKE if data.get(key) != first.get(key)]
        if differ:
            raise SDMError(f"'{path}' was measured otherwise than '{first_path}' ({', '.join(differ)} differ): "
                           "only outputs at the same N, sampler, steps, seeds and extractor share a frontier")
        for row in map(_with_code, data["rows"]):
            key = (row["label"], row["code"], row["ckpt"], row["details"])  # the code: one conversion in two codes
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def _with_code(row: dict) -> dict:
    """A row of an output written before the weighted code names no code: its spiking models were
    rate-coded (as a config record without one is read); its panel says so too."""
    if "code" in row:
        return row
    if row["label"] == "ANN":
        return {**row, "code": ""}
    panel = row["panel"].replace("SNN ", "SNN rate ", 1) if row["label"] == "converted SNN" else row["panel"]
    return {**row, "code": "rate", "panel": panel}


@command(help="Merge sdm-compare outputs measured alike into one table and one frontier plot.")
@click.argument("outputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results/frontier", show_default=True)
def main(outputs, out):
    out = Path(out)
    loaded = [(path, _read(path)) for path in outputs]
    rows = merged_rows(loaded)
    first = loaded[0][1]
    metrics = list(dict.fromkeys(m for row in rows for m in row["metrics"]))
    meta = provenance(__spec__.name)
    table = compare_table(rows, metrics)
    write_json({**{key: first[key] for key in MEASURED_ALIKE}, "sources": list(outputs), "rows": rows, **meta},
               out / "compare.json")
    write_text(f"{table}\n\nN = {first['num_samples']}, {first['sampler']}-{first['steps']}, seeds "
               f"{first['seeds'][0]}..{first['seeds'][1]}; extractor: {first['extractor']}. Merged from "
               f"{len(outputs)} sdm-compare outputs; sampling time as each run measured it. `{meta['command']}` on "
               f"{meta['machine']}, {meta['date']}\n", out / "compare.md")
    if metrics:
        plot_frontier(rows, metrics[0], first["extractor"].split(";")[0].split(" (")[0], out / "frontier.png")
    click.echo(table)


if __name__ == "__main__":
    main()
