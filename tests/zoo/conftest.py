import itertools

import pytest


def make_alias_bomb(env_id: str = "default") -> str:
    """A ~500-byte "billion laughs" hyperparameter file: 9 levels of 9 aliases, 9**9 strings in env_kwargs."""
    levels = "abcdefghi"
    lines = [f"{env_id}:", "  n_timesteps: !!float 1e5", "  policy: MlpPolicy", "  env_kwargs:"]
    lines.append('    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]')
    for prev, cur in itertools.pairwise(levels):
        lines.append(f"    {cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.fixture
def alias_bomb():
    """:return: a function env_id -> the text of an alias-bomb config file"""
    return make_alias_bomb
