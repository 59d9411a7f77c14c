from __future__ import annotations

import pickle

import pytest

from memcrm.core.errors import (
    ConfigError,
    InvalidArgument,
    MemcrmError,
    NotFound,
    PermissionDenied,
    StoreUnavailable,
    Unauthenticated,
)


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgument("interactions[3].occurred_at", "is required"),
        NotFound("recommendation", "r-1"),
        Unauthenticated("missing key"),
        PermissionDenied("lacks writer"),
        StoreUnavailable("PostgreSQL unavailable"),
        ConfigError("bad setting"),
    ],
)
def test_errors_survive_pickling_across_processes(error: MemcrmError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert again.message == error.message and again.status == error.status
    assert vars(again) == vars(error)
