"""The Flower ClientApp: one Fast-FedPG agent per SuperNode (logic in :mod:`sb3_fedpg.flower.task`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from sb3_fedpg.flower import task


def make_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """
    Build the ClientApp.

    :param overrides: kebab-case run config entries that take precedence over ``context.run_config``
        (used by :func:`sb3_fedpg.flower.simulation.run_simulation`, whose runs have no run config)
    :return: the ClientApp answering ``train.grad`` (anchor) and ``train.local`` (local steps)
    """
    overrides = dict(overrides or {})
    app = ClientApp()

    @app.train("grad")
    def grad(msg: Message, context: Context) -> Message:
        return task.handle_anchor(msg, context, overrides)

    @app.train("local")
    def local(msg: Message, context: Context) -> Message:
        return task.handle_local(msg, context, overrides)

    return app


app = make_client_app()
