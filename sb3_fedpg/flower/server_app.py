"""The Flower ServerApp: the two-phase Fast-FedPG round (logic in :mod:`sb3_fedpg.flower.task`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from sb3_fedpg.flower import task


def make_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """
    Build the ServerApp.

    :param overrides: kebab-case run config entries that take precedence over ``context.run_config``
    :return: the ServerApp running ``num-rounds`` Fast-FedPG rounds
    """
    overrides = dict(overrides or {})
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        task.run_server(grid, context, overrides)

    return app


app = make_server_app()
