"""What each section may say. Every Layer class declares the keys it implements (`keys`), the keys Darknet
reads for training only (`training_keys`: accepted without a word), and the keys whose Darknet semantics
the engine lacks (`unsupported_keys`: key -> the values that leave Darknet's default behaviour; an empty
tuple means any value changes the network). An unsupported key is an error naming it; keys of
post-processing dncompress does its own way (`approximated_keys`: key -> (values followed, what is done
instead)) and any other key are reported as warnings, like Darknet's "Unused field" (typos such as `szie=3` would else fall back to
defaults in silence)."""
from __future__ import annotations

import difflib

from ..cfg import Section

# keys Darknet's parse_network_cfg_custom reads in every layer, for training only
COMMON_TRAINING_KEYS = frozenset({"learning_rate", "clip", "onlyforward", "dont_update", "burnin_update",
                                  "stopbackward", "train_only_bn"})
# ... and those that change how the .weights file is read (the layer's tensors are skipped)
COMMON_UNSUPPORTED = {"dontload": ("0",), "dontloadscales": ("0",)}


def _is_allowed(value: str, allowed: tuple[str, ...]) -> bool:
    """value equals one of `allowed` (numerically when both are numbers, else case-insensitively)."""
    for option in allowed:
        try:
            if float(value) == float(option):
                return True
        except ValueError:
            if value.strip().lower() == option:
                return True
    return False


def check_keys(section: Section, keys: frozenset[str], training_keys: frozenset[str],
               unsupported_keys: dict[str, tuple[str, ...]],
               approximated_keys: dict[str, tuple[tuple[str, ...], str]] | None = None) -> list[str]:
    """Raise for the first unsupported key with a value that changes the network; return one warning
    (`file:line N [type] key: unused field ...`) per key that is neither implemented nor known."""
    unsupported = {**COMMON_UNSUPPORTED, **unsupported_keys}
    warnings = []
    for key, value in section.options.items():
        if key in keys:
            continue
        if key in unsupported:
            if not _is_allowed(value, unsupported[key]):
                allowed = f" (only {' or '.join(unsupported[key])})" if unsupported[key] else ""
                raise section.error(f"{key}={value} changes the network in Darknet and is not supported by "
                                    f"dncompress{allowed}", key)
            continue
        place = ":".join(p for p in (section.file, section.where(key)) if p)
        if approximated_keys and key in approximated_keys:
            allowed, note = approximated_keys[key]
            if not _is_allowed(value, allowed):
                warnings.append(f"{place}: {key}={value} is not followed: {note}")
            continue
        if key in training_keys or key in COMMON_TRAINING_KEYS:
            continue
        hint = difflib.get_close_matches(key, sorted(keys | training_keys), n=1)
        warnings.append(f"{place}: unused field '{key}={value}': not a key of [{section.type}]"
                        + (f" (did you mean '{hint[0]}'?)" if hint else "") + "; Darknet ignores it too")
    return warnings
