"""Making a registered search space by name: `get_space` (options as a mapping or validated) and `make_space`
(the same from user input, every problem one `InputError` line). A space whose options set ``compression`` comes
back wrapped in a `search_spaces.policy.PolicySpace`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.errors import InputError, format_validation_error
from search_spaces.base import SPACES, SearchSpace, SpaceOptions
from search_spaces.policy import PolicySpace


def get_space(name: str, options: dict[str, Any] | SpaceOptions | None = None, num_classes: int = 1000) -> SearchSpace:
    """Instantiate a registered space by name.

    Args:
        name: registered name (see `SPACES.names()`).
        options: a dict (validated by the space's `Options`) or an `Options` instance.
        num_classes: classifier outputs.

    With ``options.compression`` set, the space is wrapped in a `search_spaces.policy.PolicySpace`: its genotypes
    then carry a compression policy.
    """
    space = SPACES.create(name, options, num_classes=num_classes)
    return PolicySpace(space) if getattr(space.options, "compression", None) is not None else space


def make_space(name: Any, options: Any, num_classes: Any, *, source: str | Path = "--space-options",
               name_field: str = "--space", error: type[InputError] = InputError):
    """The registered search space `name` with `options` and `num_classes`.

    Args:
        source: where the options came from (a YAML file, a flag, a metadata file), for the message.
        name_field: where the name came from.
        error: the `InputError` subclass to raise (e.g. `PredictorFileError` for a predictor's metadata).

    Raises:
        `error`: an unknown space (the valid names listed), options that are not a mapping or that the space
            rejects (the first bad field named), or a class count that is not a positive integer.
    """
    if not isinstance(name, str) or name not in SPACES:
        raise error(f"{name_field}: unknown search space {name!r}; expected one of: {', '.join(SPACES.names())}")
    if options is not None and not isinstance(options, dict):
        raise error(f"{source}: space options must be a mapping of option: value, got {type(options).__name__}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise error(f"{source}: num_classes must be a positive integer, got {num_classes!r}")
    try:
        return get_space(name, options or {}, num_classes=num_classes)
    except ValidationError as err:
        raise error(format_validation_error(str(source), err)) from None
    except (ValueError, TypeError) as err:
        raise error(f"{source}: {err}") from None
