"""The GPU check's pure parts (load_tests/gpu/): which stack layouts it measures, the GPU readings it
averages per row, and the instance count it writes into every model of the repository."""

from __future__ import annotations

from pathlib import Path

from load_tests.gpu.gpu_check import CheckOptions, set_instances, stack_layouts
from load_tests.gpu.utilization import Utilization, parse_readings
from samo.contracts.emotion import EmotionContract
from samo.triton.model_config import (
    ServingOptions,
    build_model_config,
    read_model_config,
    write_model_config,
)


def test_instances_are_measured_with_the_most_gateway_processes(tmp_path: Path) -> None:
    options = CheckOptions(out=tmp_path, gateway_workers=(1, 8), instances=(1, 2, 4))
    assert stack_layouts(options) == [(1, 1), (8, 1), (8, 2), (8, 4)]
    assert stack_layouts(CheckOptions(out=tmp_path)) == [(1, 1)]
    # On 2 cores `samo serve` starts one gateway process: "1,1" is measured once.
    assert stack_layouts(CheckOptions(out=tmp_path, gateway_workers=(1, 1), instances=(1, 2))) == [
        (1, 1),
        (1, 2),
    ]


def test_gpu_readings_skip_what_is_not_a_number() -> None:
    readings = parse_readings("37\n[N/A]\n  90 \n4")
    assert readings == [37.0, 90.0, 4.0]
    assert Utilization(readings).mean_percent == 131 / 3
    assert Utilization().mean_percent is None  # a machine without nvidia-smi: the column stays empty


def test_every_model_of_the_repository_gets_the_instance_count(tmp_path: Path) -> None:
    contract = EmotionContract(num_labels=3, token_type_ids=False).model
    for name in ("emotion", "embedder"):
        options = ServingOptions(backend="python", max_batch_size=8, parameters={"intra_op_threads": "2"})
        (tmp_path / name).mkdir()
        write_model_config(tmp_path / name, build_model_config(name, contract, options))
    set_instances(tmp_path, 4)
    for name in ("emotion", "embedder"):
        config = read_model_config(tmp_path / name)
        assert [group.count for group in config.instance_group] == [4]
        assert config.parameters["intra_op_threads"].string_value == "2"  # the rest of the export kept
