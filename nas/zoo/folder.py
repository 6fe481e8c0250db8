"""A zoo folder: released networks, one folder each, and the index built from their cards.

Layout::

    ZOO_DIR/
      zoo.json              every release and every network (name, version, path, figures, card link)
      README.md             one row per network: name, accuracy, latency per profile, FLOPs, params, card
      plots/<profile>.png   accuracy against latency on that profile; released networks, their front marked
      <version>/<name>/     weights.safetensors, model.onnx, arch.txt, recipe.yaml, card.json, MODEL_CARD.md,
                            SHA256SUMS (and anchors.json for a detector, curve.csv/png after final training)

The index is rebuilt from the cards on disk (`write_index`), so it always describes what the folder holds, and
rebuilding it from the same cards writes the same bytes. A network's ``name`` (what `nas.zoo.create_model` takes)
may appear in several versions; ``name@version`` picks one, the bare name the newest release.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.io import atomic_write, atomic_write_text
from nas.export import format_figure
from nas.latency_sources import profile_file_name
from nas.zoo.card import CARD_FORMAT

ZOO_FORMAT = "hwnas-zoo/1"


class ZooError(InputError):
    """A zoo, a release or a network that cannot be used; one line naming the file and the problem."""


def _read_json(path: Path, missing: str) -> Any:
    """A JSON file's content; `ZooError` with `missing` when it is not there, naming it when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooError(missing) from None
    except (OSError, ValueError) as err:
        raise ZooError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None


def read_card(folder: Path) -> dict[str, Any]:
    """A network folder's ``card.json``.

    Raises:
        ZooError: missing, unreadable or not a card of this project's format.
    """
    path = folder / "card.json"
    card = _read_json(path, f"{path}: missing; {folder} is not a released network")
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ZooError(f"{path}: not a model card of format {CARD_FORMAT!r}")
    return card


def network_folders(zoo: Path) -> list[Path]:
    """Every released network's folder (``<version>/<name>/`` holding a card), sorted."""
    return sorted(p.parent for p in zoo.glob("*/*/card.json") if not p.parent.name.startswith("."))


def read_index(zoo: str | Path) -> dict[str, Any]:
    """A zoo's ``zoo.json``.

    Raises:
        ZooError: the folder is missing or is not a zoo (no readable ``zoo.json`` of this format).
    """
    zoo = Path(zoo)
    path = zoo / "zoo.json"
    if not zoo.is_dir():
        raise ZooError(f"{zoo}: no such zoo folder")
    index = _read_json(path, f"{zoo}: not a zoo (zoo.json missing); make one with python -m nas.zoo release")
    if not isinstance(index, dict) or index.get("format") != ZOO_FORMAT or not isinstance(index.get("networks"), list):
        raise ZooError(f"{path}: not a zoo index of format {ZOO_FORMAT!r}")
    return index


def find_network(index: dict[str, Any], ref: str, where: str) -> dict[str, Any]:
    """The index entry of ``name`` (newest release) or ``name@version``.

    Raises:
        ZooError: no such network (the message lists the zoo's names).
    """
    name, _, version = ref.partition("@")
    hits = [n for n in index["networks"] if n["name"] == name and (not version or n["version"] == version)]
    if not hits:
        names = sorted({n["name"] for n in index["networks"]})
        raise ZooError(f"{where}: no network {ref!r} in the zoo; it has: {', '.join(names) or 'none'}")
    return max(reversed(hits), key=lambda n: (n["released"], n["version"]))   # a tie: the last registered


def _entry(zoo: Path, folder: Path, card: dict[str, Any]) -> dict[str, Any]:
    rel = folder.relative_to(zoo).as_posix()
    return {"name": card["name"], "version": card["version"], "path": rel, "task": card["task"],
            "title": card["title"], "arch": card["arch"], "released": card["released"],
            "accuracy": card["accuracy"]["value"], "accuracy_metric": card["accuracy"]["metric"],
            "accuracy_split": card["accuracy"]["split"], "weights": card["accuracy"]["weights"],
            "dataset": card["provenance"]["dataset"]["name"], "flops": card["flops"], "params": card["params"],
            "latency_ms": {p: e["ms"] for p, e in card["latency"].items()},
            "latency_obtained": {p: e["obtained"] for p, e in card["latency"].items()},
            "card": f"{rel}/MODEL_CARD.md", "weights_sha256": card["source"]["weights_sha256"],
            "run": card["provenance"]["run"]}


def build_index(zoo: Path) -> dict[str, Any]:
    """The index of every network folder in `zoo`, releases in the order they were made."""
    networks = [_entry(zoo, f, read_card(f)) for f in network_folders(zoo)]
    networks.sort(key=lambda n: (n["released"], n["version"], -(n["accuracy"] or 0), n["name"]))
    releases: dict[str, dict[str, Any]] = {}
    for n in networks:
        r = releases.setdefault(n["version"], {"version": n["version"], "released": n["released"], "networks": []})
        r["released"] = min(r["released"], n["released"])
        r["networks"].append(n["name"])
    return {"format": ZOO_FORMAT, "releases": sorted(releases.values(), key=lambda r: (r["released"], r["version"])),
            "networks": networks}


def readme_text(index: dict[str, Any]) -> str:
    """The zoo's ``README.md``: one table row per network, the plots, how to load."""
    profiles = sorted({p for n in index["networks"] for p in n["latency_ms"]})
    head = ["Network", "Version", "Accuracy", "Measured on", "Weights"] + [f"{p} (ms)" for p in profiles] + [
        "FLOPs", "Params", "Card"]
    lines = ["# Model zoo", "", f"{len(index['networks'])} network(s) in {len(index['releases'])} release(s). "
             "Latency cells: the figure and how it was obtained (measured, simulated, predicted).", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for n in index["networks"]:
        lat = [f"{format_figure(n['latency_ms'][p])} ({n['latency_obtained'][p]})" if p in n["latency_ms"] and
               n["latency_ms"][p] is not None else "-" for p in profiles]
        lines.append("| " + " | ".join([f"`{n['name']}`", n["version"], f"{format_figure(n['accuracy'])} "
                                        f"({n['accuracy_metric']})", n["dataset"], n["weights"], *lat,
                                        format_figure(n["flops"]), format_figure(n["params"]),
                                        f"[card]({n['card']})"]) + " |")
    lines += ["", "## Accuracy against latency", ""] + [f"![{p}](plots/{profile_file_name(p)}.png)" for p in profiles]
    lines += ["", "## Loading", "", "```python", "import nas.zoo, timm",
              'model = nas.zoo.create_model("NAME", pretrained=True, zoo="THIS_FOLDER")   # weights checked against '
              "SHA256SUMS", 'nas.zoo.register("THIS_FOLDER")   # then: timm.create_model("hwnas_NAME", pretrained=True)',
              "```", "", "`python -m nas.zoo verify THIS_FOLDER` re-checks every file and re-measures latency here."]
    return "\n".join(lines) + "\n"


def plot_profile(index: dict[str, Any], profile: str, path: Path) -> Path:
    """Accuracy against latency on `profile` for the released networks that have a figure there: one colour per
    dataset (accuracies of different datasets do not compare), each dataset's front drawn, every point named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nas.objectives import pareto_mask

    nets = [n for n in index["networks"] if n["latency_ms"].get(profile) is not None and n["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for dataset in sorted({n["dataset"] for n in nets}):
        group = sorted((n for n in nets if n["dataset"] == dataset), key=lambda n: n["latency_ms"][profile])
        x = [n["latency_ms"][profile] for n in group]
        y = [n["accuracy"] for n in group]
        points = ax.scatter(x, y, s=30, label=dataset[:50])
        front = pareto_mask(y, x)
        ax.step([v for v, f in zip(x, front) if f], [v for v, f in zip(y, front) if f], where="post",
                c=points.get_facecolor()[0], alpha=0.6)
        for n, xi, yi in zip(group, x, y):
            ax.annotate(f"{n['name']}@{n['version']}", (xi, yi), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set(xlabel=f"latency on {profile} (ms)", ylabel="accuracy", title=f"model zoo on {profile}")
    ax.grid(alpha=0.3)
    if nets:
        ax.legend(fontsize=7, loc="best")
    ax.margins(x=0.15, y=0.1)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    plt.close(fig)
    return path


def write_index(zoo: Path) -> dict[str, Any]:
    """Rebuild ``zoo.json``, ``README.md`` and the plots from the cards; files whose content would not change are
    left alone (a repeated release rewrites nothing)."""
    index = build_index(zoo)
    text = json.dumps(index, indent=1) + "\n"
    old = (zoo / "zoo.json").read_text() if (zoo / "zoo.json").is_file() else None
    profiles = sorted({p for n in index["networks"] for p in n["latency_ms"]})
    plots = {p: zoo / "plots" / f"{profile_file_name(p)}.png" for p in profiles}
    if text != old or any(not path.is_file() for path in plots.values()):
        for p, path in plots.items():
            plot_profile(index, p, path)
        atomic_write_text(zoo / "README.md", readme_text(index))
        atomic_write_text(zoo / "zoo.json", text)   # last: the index names only what is in place
    return index
