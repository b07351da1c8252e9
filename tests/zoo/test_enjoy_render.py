"""``zoo.enjoy --record-video`` / ``--render``: each agent's own env, rendered (issue 28, item 3)."""

import pytest

from sb3_fedpg.zoo.enjoy import enjoy
from sb3_fedpg.zoo.train import train

TINY = ["policy_kwargs:{net_arch: [16]}", "n_agents:2", "n_envs:4", "local_steps:2", "n_steps:16"]


def tiny_run(tmp_path, env_id, n=300):
    argv = ["--algo", "fedpg", "--env", env_id, "-n", str(n), "--seed", "0", "-f", str(tmp_path / "logs"), "--verbose", "0"]
    train([*argv, "-params", *TINY])
    return ["--algo", "fedpg", "--env", env_id, "-f", str(tmp_path / "logs"), "--n-episodes", "1"]


def frame_count(path) -> int:
    from moviepy import VideoFileClip

    with VideoFileClip(str(path)) as clip:
        return sum(1 for _ in clip.iter_frames())


@pytest.mark.parametrize("env_id", ["sb3_fedpg/HeteroCartPole-v0", "sb3_fedpg/HeteroPendulum-v0"])  # Discrete, Box
def test_record_video_writes_one_playable_video_per_agent(tmp_path, env_id, capsys):
    argv = tiny_run(tmp_path, env_id)
    result = enjoy([*argv, "--record-video", "-n", "30"])
    folder = tmp_path / "logs" / "fedpg" / f"{env_id.replace('/', '-')}_1" / "videos"
    assert sorted(p.name for p in folder.iterdir()) == ["agent_0-episode-0.mp4", "agent_1-episode-0.mp4"]
    assert result["videos"] == [str(folder / "agent_0-episode-0.mp4"), str(folder / "agent_1-episode-0.mp4")]
    for video in folder.iterdir():
        assert video.stat().st_size > 0
        # 31 frames written (the reset frame and one per step); moviepy's reader counts by duration x fps
        assert 30 <= frame_count(video) <= 31
    out = capsys.readouterr().out
    assert "agent   1:" in out and "global objective" in out  # the per-agent table is still printed

    # --video-folder puts them elsewhere
    enjoy([*argv, "--record-video", "--video-length", "5", "--video-folder", str(tmp_path / "videos")])
    assert {p.name for p in (tmp_path / "videos").iterdir()} == {"agent_0-episode-0.mp4", "agent_1-episode-0.mp4"}


def test_render_shows_every_agent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    result = enjoy([*tiny_run(tmp_path, "sb3_fedpg/HeteroCartPole-v0"), "--render", "-n", "10"])
    out = capsys.readouterr().out
    assert "agent   0: 10 steps" in out and "agent   1: 10 steps" in out and result["videos"] == []


def test_a_family_that_cannot_render_is_refused_by_name(tmp_path):
    argv = tiny_run(tmp_path, "sb3_fedpg/HeteroPointMass-v0", n=200)
    for flag in ("--record-video", "--render"):
        with pytest.raises(ValueError, match=r"sb3_fedpg/HeteroPointMass-v0 cannot render .*sb3_fedpg/PointMass-v0.*--render"):
            enjoy([*argv, flag, "-n", "5"])
    assert not (tmp_path / "logs" / "fedpg" / "sb3_fedpg-HeteroPointMass-v0_1" / "videos").exists()
    assert len(enjoy(argv)["per_agent"]) == 2  # without rendering it evaluates as before
