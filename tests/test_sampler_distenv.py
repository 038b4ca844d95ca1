"""distenv: rank/world from arguments, torchrun, Horovod and OpenMPI variables."""
from __future__ import annotations

import pytest

from cloudrec.errors import ConfigError
from cloudrec.reader.distenv import DistInfo, dist_info, worker_info


def test_arguments_win_over_environment():
    env = {"RANK": "3", "WORLD_SIZE": "4"}
    assert dist_info(1, 2, env=env) == DistInfo(1, 2, 0, "arguments")
    assert dist_info(part_index=2, num_parts=5, env=env) == DistInfo(2, 5, 0, "arguments")
    assert dist_info(world_size=3, env=env).rank == 0


@pytest.mark.parametrize("env,expect", [
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, DistInfo(3, 4, 1, "env")),
    ({"HOROVOD_RANK": "5", "HOROVOD_SIZE": "8", "HOROVOD_LOCAL_RANK": "1"}, DistInfo(5, 8, 1, "horovod")),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}, DistInfo(1, 2, 0, "openmpi")),
    ({"RANK": "0", "WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"},
     DistInfo(0, 2, 0, "env")),
    ({"LOCAL_RANK": "1"}, DistInfo(0, 1, 0, "default")),
    ({}, DistInfo(0, 1, 0, "default")),
])
def test_environment_lookup_order(env, expect):
    assert dist_info(env=env) == expect


@pytest.mark.parametrize("kw", [dict(env={"RANK": "x", "WORLD_SIZE": "2"}),
                                dict(env={"RANK": "2", "WORLD_SIZE": "2"}),
                                dict(rank=0, world_size=0), dict(rank=1, part_index=1),
                                dict(part_index=3, num_parts=3)])
def test_bad_values_raise(kw):
    with pytest.raises(ConfigError):
        dist_info(**kw)


def test_worker_info_outside_a_dataloader():
    assert worker_info() == (0, 1)
