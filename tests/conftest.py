"""Shared, session-scoped fixtures: each trained or exported artifact is made once per test run.

Sections are owned by the stage that produces the artifact; later stages use those fixtures instead of
training their own, which keeps the suite within its CPU budget.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from deepcrl._logging import quiet  # noqa: E402

quiet()

# ---- foundation ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def point_maze():
    from deepcrl import envs

    return envs.make("point_maze")


# ---- teacher (tiny_teacher_dir) -----------------------------------------------------------------------------

# ---- student (tiny_student_dir) -----------------------------------------------------------------------------

# ---- export (tiny_onnx) -------------------------------------------------------------------------------------
