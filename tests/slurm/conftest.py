"""The Slurm tests' cluster: one real cluster (munge, slurmctld, three slurmd in namespaces, a
jupyter-worker executor per node) for the whole session, built once the test users exist."""

from __future__ import annotations

import pytest

from tests.conftest import is_root
from tests.slurm.cluster import SlurmCluster, missing_programs


@pytest.fixture(scope="session")
def slurm_cluster(users):
    """A running cluster; skipped, saying why, without root or without Slurm and munge."""
    if not is_root():
        pytest.skip("the Slurm test cluster needs root (namespaces, daemons, test users)")
    missing = missing_programs()
    if missing:
        pytest.skip(
            f"Slurm and munge are not installed here ({', '.join(missing)} missing): "
            "apt-get install slurmctld slurmd slurm-client munge"
        )
    with SlurmCluster() as cluster:
        print(f"\nSlurm test cluster in {cluster.folder} up in {cluster.timings['up_s']:.2f}s ({cluster.timings})")
        yield cluster
    print(f"\nSlurm test cluster down in {cluster.timings['down_s']:.2f}s")


@pytest.fixture(autouse=True)
def slurm_jobs_cancelled_after_each_test(request):
    """A test's Slurm jobs end with it (a job left running, or a relay still lingering, would hold
    a node and hang the next test that needs the whole cluster)."""
    yield
    if "slurm_cluster" in request.fixturenames:
        left = request.getfixturevalue("slurm_cluster").cancel_all(grace_s=5)
        if left:
            print(f"cancelled Slurm jobs left by {request.node.name}: {', '.join(left)}")


def head_flags(cluster: SlurmCluster) -> list[str]:
    return cluster.head_config(poll_s=0.2, linger_s=60)
