import pytest

from verity.rewards.match import accuracy
from verity.rewards.registry import registered_verifiers, resolve_verifier
from verity.rewards.verifier import register_verifier


def test_builtin_names_are_registered() -> None:
    names = registered_verifiers()
    for name in ("accuracy", "exact_match", "numeric_match", "format", "reasoning_gym", "math"):
        assert name in names
    assert resolve_verifier("accuracy") is accuracy


def test_unknown_name_lists_closest() -> None:
    with pytest.raises(KeyError, match="Did you mean 'accuracy'"):
        resolve_verifier("acuracy")


def test_import_path() -> None:
    fn = resolve_verifier("fixture_verifiers:length_reward")
    assert fn("abc") == 3.0


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("no_such_module_xyz:fn", ImportError, "cannot import module 'no_such_module_xyz'"),
        ("fixture_verifiers:length_rewrd", AttributeError, "Did you mean 'length_reward'"),
        ("fixture_verifiers:", ValueError, "package.module:function"),
        ("os:sep", TypeError, "not a function"),
    ],
)
def test_bad_import_path_says_what_failed(spec: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_verifier(spec)


def test_registering_a_taken_name_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_verifier("accuracy")(lambda completion: 1.0)
