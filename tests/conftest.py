"""Shared test settings.

One intra-op thread: the tests use small tensors, and on a busy 2-core machine torch's default
thread pool spends most of its time waiting for cores (a 1000-step rollout took 28 s instead of 0.5 s).
"""

import torch

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def feature_cache(tmp_path_factory):
    """Image evaluations train their FID feature classifier once per data set: into a session
    folder, not the user's ~/.cache (tests that check the caching set their own folder)."""
    import os

    before = os.environ.get("FEWSTEP_CACHE")
    os.environ["FEWSTEP_CACHE"] = str(tmp_path_factory.mktemp("fewstep-cache"))
    yield
    if before is None:
        os.environ.pop("FEWSTEP_CACHE", None)
    else:
        os.environ["FEWSTEP_CACHE"] = before
