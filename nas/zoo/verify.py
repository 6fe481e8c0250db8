"""Verify a zoo on this machine: ``python -m nas.zoo verify ZOO_DIR [--profile P ...] [--name NAME ...]``.

For every network: its files against ``SHA256SUMS`` and the weights against the hash its card and the index
record (a mismatch is bad input: one line, exit status 2); the ONNX graph against PyTorch (within
`PARITY_TOLERANCE`); and its latency re-measured on every profile the card has a measured figure for and this
machine can measure (`HardwareProfile.measure_exported`: live CPU profiles, a table profile whose runtime is here,
the FPGA simulator, CUDA on a GPU), compared with the card. A difference beyond the profile's recorded noise
(`nas.zoo.card.tolerance`) is measured again, and flagged when the second measurement confirms it (beyond the
tolerance, the same way): a passing load spike is not a drift. Run after a runtime or driver upgrade, the same
command says whether the figures moved. Exit status 1 when anything is flagged.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core.errors import IntegrityError
from nas.export import onnx_parity
from nas.zoo import check_folder, load_network, space_of
from nas.zoo.card import ROUNDS, tolerance
from nas.zoo.folder import read_card, read_index
from nas.zoo.release import PARITY_TOLERANCE


def check_network(zoo: Path, entry: dict[str, Any], profiles: list[str] | None) -> dict[str, Any]:
    """One network's verdict: ``parity``, ``latency`` (per profile: card ms, measured ms, difference, tolerance,
    flagged or skipped with the reason) and ``flagged``."""
    from hardware_profiles import get_profile
    from core.errors import InputError

    folder = zoo / entry["path"]
    check_folder(folder)
    card = read_card(folder)
    if entry.get("weights_sha256") not in (None, card["source"]["weights_sha256"]):
        raise IntegrityError(f"{zoo / 'zoo.json'}: {entry['name']}: weights hash differs from its card.json")
    model = load_network(folder)
    parity = onnx_parity(model, folder / "model.onnx", tuple(card["space"]["input_shape"]))
    space, genotype = space_of(card, folder / "card.json")
    latency = {}
    for name, lat in card["latency"].items():
        if profiles and name not in profiles and lat["profile"] not in profiles:
            continue
        row = {"card_ms": lat["measured_ms"], "measured_ms": None, "difference": None, "tolerance": tolerance(lat),
               "flagged": False, "note": ""}
        latency[name] = row
        if lat["measured_ms"] is None:
            row["note"] = f"no measured figure on the card ({lat['obtained']})"
            continue
        try:
            profile = get_profile(lat["profile"])
            ms, how = profile.measure_exported(space, genotype, ROUNDS)
        except InputError as err:
            ms, how = None, f"not measured: {err}"
        if ms is None:
            row["note"] = how
            continue
        row.update(measured_ms=ms, difference=ms / lat["measured_ms"] - 1, note=how)
        if abs(row["difference"]) > row["tolerance"]:   # confirm: a passing load spike is not a drift
            again, _ = profile.measure_exported(space, genotype, ROUNDS)
            second = again / lat["measured_ms"] - 1
            row["confirmation_ms"] = again
            row["flagged"] = abs(second) > row["tolerance"] and (second > 0) == (row["difference"] > 0)
            if not row["flagged"]:
                row.update(measured_ms=again, difference=second, note=f"{how}; a first measurement, "
                           f"{ms:.4g} ms, was not confirmed")
    flagged = parity > PARITY_TOLERANCE or any(r["flagged"] for r in latency.values())
    return {"name": entry["name"], "version": entry["version"], "parity": parity, "latency": latency,
            "flagged": flagged}


def verify(zoo: str | Path, profiles: list[str] | None = None, names: list[str] | None = None,
           log_line=print) -> list[dict[str, Any]]:
    """Verify the zoo's networks (all, or those named); print one block per network; return the verdicts."""
    from tqdm import tqdm

    zoo = Path(zoo)
    index = read_index(zoo)
    entries = [e for e in index["networks"] if not names or e["name"] in names
               or f"{e['name']}@{e['version']}" in names]
    if names and not entries:
        from nas.zoo.folder import ZooError

        raise ZooError(f"--name: none of {', '.join(names)} is in {zoo / 'zoo.json'}")
    out = []
    for entry in tqdm(entries, desc="verify", unit="net", file=sys.stderr, disable=len(entries) < 2):
        verdict = check_network(zoo, entry, profiles)
        out.append(verdict)
        log_line(report_lines(verdict))
    return out


def report_lines(v: dict[str, Any]) -> str:
    """A network's verdict as a few lines of text."""
    mark = "FLAGGED" if v["flagged"] else "ok"
    ok_parity = "ok" if v["parity"] <= PARITY_TOLERANCE else "FLAGGED"
    lines = [f"{v['name']}@{v['version']}: {mark}  (files match SHA256SUMS; ONNX vs PyTorch max abs difference "
             f"{v['parity']:.1e}: {ok_parity})"]
    for p, r in v["latency"].items():
        if r["measured_ms"] is None:
            lines.append(f"  {p}: skipped: {r['note']}")
            continue
        lines.append(f"  {p}: card {r['card_ms']:.4g} ms, measured {r['measured_ms']:.4g} ms "
                     f"({r['difference']:+.1%}; tolerance {r['tolerance']:.0%}): "
                     f"{'FLAGGED' if r['flagged'] else 'ok'}")
    return "\n".join(lines)

