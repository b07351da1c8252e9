"""Assertions on what the documentation's examples build (test_docs_blocks.py runs every block as written)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def code_block_after(heading: str, page: str = "docs/environments.md") -> str:
    text = (ROOT / page).read_text()
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_federated_environment_examples_run():
    namespace: dict = {}
    exec(code_block_after("## Building a federated environment"), namespace)
    env = namespace["env"]
    assert env.n_agents == 3 and env.num_envs == 3 * env.n_envs_per_agent
    # each factory got its own agent index (no late-binding lambda): the agents' rewards differ
    wrapped = [env.venv.envs[i] for i in range(env.num_envs)] if hasattr(env.venv, "envs") else []
    agents = {getattr(e.unwrapped.spec, "kwargs", {}).get("agent") for e in wrapped}
    assert agents == {0, 1, 2}, agents


def test_pixel_example_runs_with_a_small_budget():
    code = code_block_after("## Images and Dict observations")
    assert "model.learn(10_000)" in code
    namespace: dict = {}
    exec(code.replace("model.learn(10_000)", "model.learn(512)"), namespace)
    model = namespace["model"]
    assert model.num_timesteps >= 512 and model.observation_space.shape == (1, 42, 42)
