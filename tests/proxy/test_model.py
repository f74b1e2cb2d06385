"""The proxy configuration model's errors name the field that is wrong (sans-IO)."""

from __future__ import annotations

import msgspec
import pytest

from pilotfish.proxy import model


def _cluster(**kw) -> dict:
    return {"name": "c", "type": "STATIC", **kw}


@pytest.mark.parametrize(("cfg", "expected"), [
    # a rule checked after decoding: the path ends with the field, not the object
    ({"clusters": [_cluster(outlier_detection={"interval": "10x"})]},
     "invalid duration '10x' (expected e.g. '1s', '250ms', '1h2m') - at `$.clusters[0].outlier_detection.interval`"),
    ({"clusters": [_cluster(), _cluster(name="d", connect_timeout="abc")]},
     "invalid duration 'abc' (expected e.g. '1s', '250ms', '1h2m') - at `$.clusters[1].connect_timeout`"),
    ({"clusters": [_cluster(circuit_breakers={"idle_timeout": -1})]},
     "duration must not be negative - at `$.clusters[0].circuit_breakers.idle_timeout`"),
    ({"drain_timeout": "-1s"}, "drain_timeout: invalid duration '-1s'"),
    # type errors name the field already
    ({"clusters": [_cluster(type=7)]}, "Expected `str`, got `int` - at `$.clusters[0].type`"),
    ({"clusters": [_cluster(colour="red")]}, "Object contains unknown field `colour` - at `$.clusters[0]`"),
    # rules about several fields keep their own wording
    ({"clusters": [_cluster(), _cluster()]}, "clusters: duplicate names ['c']"),
    ({"endpoints": [{"cluster": "x"}]}, "endpoints[0]: cluster 'x' is not defined"),
])
def test_errors_name_the_field(cfg: dict, expected: str) -> None:
    with pytest.raises(model.ConfigError) as e:
        model.decode_config(cfg)
    assert str(e.value).startswith(expected), str(e.value)


class _Thing(msgspec.Struct):
    a: int

    def __post_init__(self) -> None:
        raise ValueError("a, b: both wrong")


class _Outer(msgspec.Struct):
    t: _Thing


def test_a_message_without_a_field_prefix_is_left_as_it_is() -> None:
    with pytest.raises(msgspec.ValidationError) as e:
        msgspec.convert({"t": {"a": 1}}, _Outer)
    assert model.validation_message(e.value) == "a, b: both wrong - at `$.t`"
