"""The model zoo: searched networks released with their weights, ONNX graph and a card of provenance, loadable by
name.

    import nas.zoo
    model = nas.zoo.create_model("quickstart_3fa9c2", pretrained=True, zoo="zoo/")   # weights checked first
    model = timm.create_model("hwnas_quickstart_3fa9c2", pretrained=True)           # once the zoo is registered

Registered zoos: the one shipped in the repository (``zoo/``) and every folder on ``HWNAS_ZOO_PATH`` (separated by
``os.pathsep``) when this module is imported, and any folder passed to `register` or to ``create_model(...,
zoo=...)``. Each of their networks is registered with timm as ``hwnas_<name>`` with a ``pretrained_cfg`` whose
``file`` is the local weights: nothing is downloaded. A name in several registered zoos (or versions) resolves to
the newest release, the zoo registered last winning a tie; ``name@version`` picks a version.

Releases are made by ``python -m nas.zoo release`` (`nas.zoo.release`), checked by ``python -m nas.zoo verify``
(`nas.zoo.verify`); the folder layout and index are `nas.zoo.folder`, the card `nas.zoo.card`.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

from core.errors import InputError, IntegrityError, sha256_file
from core.io import SUMS, verify_sha256sums
from nas.zoo.folder import ZooError, find_network, read_card, read_index

__all__ = ["ENV", "SHIPPED_ZOO", "ZooError", "create_model", "list_models", "load_network", "register"]

ENV = "HWNAS_ZOO_PATH"
SHIPPED_ZOO = Path(__file__).resolve().parents[2] / "zoo"
_networks: dict[str, list[dict[str, Any]]] = {}   # name -> index entries, each with its zoo folder in "zoo"


def check_folder(folder: Path, names: list[str] | None = None) -> None:
    """Check a released network's files against its ``SHA256SUMS`` (which must exist).

    Raises:
        IntegrityError: SHA256SUMS missing, or a file missing or altered (named, with expected and found hashes).
    """
    if not (folder / SUMS).is_file():
        raise IntegrityError(f"{folder / SUMS}: missing; the released network cannot be checked")
    verify_sha256sums(folder, names)


def space_of(card: dict[str, Any], where: Path):
    """(search space, genotype) a card's network is built from.

    Raises:
        ZooError: a space this project does not know or options it rejects, an arch that does not decode.
    """
    from search_spaces.make import make_space

    s = card["space"]
    space = make_space(s["name"], s["options"], s["num_classes"], source=where, name_field=f"{where}: space.name",
                       error=ZooError)
    try:
        return space, space.decode(card["arch"])
    except ValueError as err:
        raise ZooError(f"{where}: arch: {err}") from None


def load_network(folder: str | Path, pretrained: bool = True):
    """The network released in `folder` (in eval mode), with its weights when `pretrained`: the card, the weights
    and a detector's anchors are checked against ``SHA256SUMS`` first. A detector gets ``model.postprocess(logits,
    deltas)`` (`nas.evaluation.detection.postprocess` with its anchors). ``model.zoo_card`` is the card.

    Raises:
        IntegrityError: a file that does not match SHA256SUMS; `ZooError` for a folder that is not a network.
    """
    folder = Path(folder)
    card = read_card(folder)
    check_folder(folder, [n for n in ("card.json", "weights.safetensors", "anchors.json")
                          if n != "weights.safetensors" or pretrained])
    if pretrained and sha256_file(folder / "weights.safetensors") != card["source"]["weights_sha256"]:
        raise IntegrityError(f"{folder / 'weights.safetensors'}: differs from the weights its card.json records")
    space, genotype = space_of(card, folder / "card.json")
    model = space.build(genotype)
    if pretrained:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)
    if card["task"] == "detection":
        from nas.evaluation.detection.postprocess import postprocess

        model.postprocess = functools.partial(postprocess, anchors=model.anchors)
    model.zoo_card = card
    return model.eval()


def register(zoo: str | Path) -> list[str]:
    """Register a zoo's networks (for `create_model` and, as ``hwnas_<name>``, for timm); returns their names.

    Raises:
        ZooError: the folder is not a zoo.
    """
    zoo = Path(zoo).resolve()
    index = read_index(zoo)
    for entry in index["networks"]:
        entries = [e for e in _networks.get(entry["name"], []) if not (e["zoo"] == zoo and e["version"] ==
                                                                       entry["version"])]
        _networks[entry["name"]] = entries + [{**entry, "zoo": zoo}]
        _register_timm(entry["name"])
    return sorted({e["name"] for e in index["networks"]})


def list_models(zoo: str | Path | None = None) -> list[str]:
    """Names of the networks of `zoo`, or of every registered zoo."""
    if zoo is not None:
        return sorted({e["name"] for e in read_index(zoo)["networks"]})
    return sorted(_networks)


def create_model(name: str, pretrained: bool = True, zoo: str | Path | None = None, **kwargs: Any):
    """A zoo network by name (``name`` or ``name@version``), with its checked weights when `pretrained`.

    Args:
        name: the network's ``name`` in ``zoo.json`` (optionally ``@version``).
        pretrained: load the released weights (else the network with fresh initial weights).
        zoo: the zoo folder (registered on the way); default: every registered zoo.
        kwargs: ``num_classes`` (must match the released network's); timm's own keywords are accepted and unused.

    Raises:
        ZooError: an unknown name, a zoo folder that is not one, options the network cannot take;
            `IntegrityError` for weights that do not match their SHA256SUMS.
    """
    if zoo is not None:
        zoo = Path(zoo).resolve()
        register(zoo)
        entries = [e for e in _networks.get(name.partition("@")[0], []) if e["zoo"] == zoo]
        where = str(zoo)
    else:
        entries = _networks.get(name.partition("@")[0], [])
        where = "registered zoos (" + ", ".join(sorted({str(e["zoo"]) for es in _networks.values() for e in es})) \
                + ")" if _networks else "no zoo registered (pass zoo=DIR, nas.zoo.register(DIR) or set HWNAS_ZOO_PATH)"
    if not entries:
        raise ZooError(f"{where}: no network {name!r}; it has: {', '.join(_all_names(zoo)) or 'none'}")
    entry = find_network({"networks": entries}, name, where)
    model = load_network(entry["zoo"] / entry["path"], pretrained=pretrained)
    unknown = {k for k, v in kwargs.items() if v is not None} - {"num_classes", *_TIMM_KEYWORDS}
    if unknown:
        raise ZooError(f"create_model({name!r}): unknown option(s) {', '.join(sorted(unknown))}; zoo networks are "
                       "built as released")
    wanted = kwargs.get("num_classes")
    if wanted is not None and wanted != model.zoo_card["space"]["num_classes"]:
        raise ZooError(f"create_model({name!r}): num_classes={wanted}, but the network was released with "
                       f"{model.zoo_card['space']['num_classes']}")
    return model


_TIMM_KEYWORDS = {"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only"}


def _all_names(zoo: Path | None) -> list[str]:
    return sorted({n for n, es in _networks.items() for e in es if zoo is None or e["zoo"] == zoo})


def _register_timm(name: str) -> None:
    """``hwnas_<name>`` as a timm model whose entry point calls `create_model` (once per name)."""
    from nas.zoo import timm_entries

    newest = find_network({"networks": _networks[name]}, name, "registered zoos")   # what create_model(name) loads
    timm_entries.register(name, newest, create_model)


def _register_defaults() -> None:
    """Register the shipped zoo and the folders on ``HWNAS_ZOO_PATH``; a folder that is not a zoo is one warning
    line, not an import error."""
    folders = [SHIPPED_ZOO] if (SHIPPED_ZOO / "zoo.json").is_file() else []
    folders += [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    for folder in folders:
        try:
            register(folder)
        except InputError as err:
            print(f"warning: {ENV}: {err}", file=sys.stderr)


_register_defaults()
