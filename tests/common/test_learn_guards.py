"""learn() refuses what would corrupt a model: a second concurrent learn(), or no environment at all."""

import threading

import pytest
from stable_baselines3.common.callbacks import BaseCallback

from sb3_fedpg import FederatedPG, FederatedPPO
from sb3_fedpg.svrpgm import FederatedSVRPGM

ALGOS = [FederatedPG, FederatedPPO, FederatedSVRPGM]


class StartOtherLearn(BaseCallback):
    """On the first step, runs learn() on the same model in another thread and waits for it."""

    def __init__(self):
        super().__init__()
        self.error: BaseException | None = None
        self.done = False

    def _on_step(self):
        if not self.done:
            self.done = True

            def other():
                try:
                    self.model.learn(16)
                except BaseException as error:
                    self.error = error

            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
        return True


@pytest.mark.parametrize("cls", ALGOS)
def test_a_second_concurrent_learn_is_refused_and_the_first_is_unharmed(tiny_model, cls):
    model = tiny_model(cls)
    callback = StartOtherLearn()
    rounds = 3
    model.learn(rounds * model.steps_per_round, callback=callback)
    assert isinstance(callback.error, RuntimeError) and "already running" in str(callback.error)
    assert model.num_timesteps == rounds * model.steps_per_round and model._n_rounds == rounds
    model.learn(model.steps_per_round)  # free again once the first learn() returned


@pytest.mark.parametrize("cls", ALGOS)
def test_learn_without_an_environment_says_how_to_give_one(tiny_model, tmp_path, cls):
    tiny_model(cls).save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip")
    with pytest.raises(ValueError, match=r"no environment to learn on.*set_env"):
        loaded.learn(100)


def test_cuda_without_a_gpu_warns_instead_of_training_on_the_cpu_silently():
    import torch as th

    if th.cuda.is_available():
        pytest.skip("a GPU is available here")
    with pytest.warns(UserWarning, match=r"no CUDA GPU is available .* runs on the CPU"):
        model = FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=2, n_steps=8, device="cuda")
    assert model.device.type == "cpu"
