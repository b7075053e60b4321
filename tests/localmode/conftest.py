"""Local-mode tier: fixtures live in support/localmode.py (helpers the tests import too)."""

from support.localmode import (  # noqa: F401  (fixtures pytest collects from this conftest)
    docker_ready,
    localmode,
    localmode_lock,
    serve_image,
    small_sample,
    torch_serve_image,
    train_image,
    trained_model,
)
