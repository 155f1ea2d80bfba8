"""Typed records to and from JSON. A record is a dataclass whose fields are records, lists, tuples, mappings with
typed values, or plain values; `dataclasses.asdict` writes one, `from_json(Type, data)` rebuilds it by its field
types, so report.json, a bundle's facts and a Ray worker's reply come back as the types that wrote them."""
from __future__ import annotations

import dataclasses
import types
import typing


class RecordError(ValueError):
    """JSON that does not fit the record type it is read as (a key the type does not have, a missing field)."""


def from_json(tp, value, where: str = ""):
    """`value` (parsed JSON) as type `tp`; nested dataclasses by their type hints; int dict keys restored."""

    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1:
            return from_json(kinds[0], value, where)
        records = [a for a in kinds if dataclasses.is_dataclass(a)]
        if not (records and isinstance(value, dict)):
            return value
        # the record whose fields are exactly the keys written (asdict writes every field), else the first that
        # has them all; several records and none fitting: an error, not a guess
        exact = [a for a in records if set(value) == _names(a)]
        fits = exact or [a for a in records if set(value) <= _names(a)]
        if fits:
            return from_json(fits[0], value, where)
        if len(records) > 1:
            raise RecordError(f"{where or 'value'}: fits none of {', '.join(a.__name__ for a in records)} "
                              f"(keys {', '.join(sorted(value))})")
        return from_json(records[0], value, where)
    if origin in (list, tuple):
        item = args[0] if args else typing.Any
        out = [from_json(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        key, val = args if args else (str, typing.Any)
        return {(int(k) if key is int else k): from_json(val, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _record(tp, value, where or tp.__name__)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _names(tp) -> set[str]:
    return {f.name for f in dataclasses.fields(tp) if f.init}


def _record(tp, value, where: str):
    if not isinstance(value, dict):
        raise RecordError(f"{where}: expected an object for {tp.__name__}, got {type(value).__name__}")
    hints = typing.get_type_hints(tp)
    names = {f.name for f in dataclasses.fields(tp) if f.init}
    unknown = sorted(set(value) - names)
    if unknown:
        raise RecordError(f"{where}: {tp.__name__} has no field {', '.join(unknown)}")
    try:
        return tp(**{k: from_json(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    except TypeError as exc:  # a required field missing
        raise RecordError(f"{where}: {exc}") from exc
