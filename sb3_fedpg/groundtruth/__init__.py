"""
Exact ground truths behind one protocol: a federated problem with exact objectives, gradients and optimum
(:class:`GroundTruth`), and the runs on any of them (:mod:`sb3_fedpg.groundtruth.runs`, imported on first use so that
the problems' exact formulas stay torch-free).

Implemented by the tabular MDPs (:class:`sb3_fedpg.tabular.runs.TabularGroundTruth`) and the LQR
(:class:`sb3_fedpg.lqr.runs.LQRGroundTruth`).
"""

from sb3_fedpg.groundtruth.protocol import (
    Baseline,
    GPOMDPSampler,
    GradientOracle,
    GroundTruth,
    InvalidParamsError,
    Optimum,
    RunResult,
    SampledEstimator,
)

__all__ = [
    "Baseline",
    "GPOMDPSampler",
    "GradientOracle",
    "GroundTruth",
    "InvalidParamsError",
    "Optimum",
    "RunResult",
    "SampledEstimator",
]
