"""The prolog's GPU health check on the real H200 `nvidia-smi -q -x` output and broken variants.

Fixtures are built at test time from ../shared/fixtures/gpu-h200/ (not copied into the repo):
an 8-GPU node is the real <gpu> element repeated with its own minor numbers and bus ids.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import pytest

from adsched.plugins.gpu_health import HealthInputError, check_xml

from shared_data import GPU_FIXTURES as FIXTURES


def real_xml() -> str:
    return (FIXTURES / "nvidia-smi-q.xml").read_text()


def eight_gpu_node(mutate=None, drop: int = 0) -> str:
    """The real log with its one GPU cloned to 8; `mutate(gpu_element)` breaks GPU 3."""
    root = ET.fromstring(real_xml())
    real = root.find("gpu")
    root.remove(real)
    for i in range(8 - drop):
        g = copy.deepcopy(real)
        g.set("id", f"00000000:{i + 0x10:02X}:00.0")
        g.find("minor_number").text = str(i)
        if i == 3 and mutate:
            mutate(g)
        root.append(g)
    root.find("attached_gpus").text = str(8 - drop)
    return ET.tostring(root, encoding="unicode")


def set_text(path, value):
    def mutate(g):
        g.find(path).text = value
    return mutate


def test_the_real_h200_is_healthy_despite_its_history():
    report = check_xml(real_xml(), expected_gpus=1)
    assert report.ok, report.problems
    g = report.gpus[0]
    assert (g.name, g.uuid, g.bus_id) == ("NVIDIA H200", "GPU-d0c488fa-af33-39da-3a42-fdae4a41ce23", "00000000:00:06.0")


def test_eight_healthy_gpus():
    report = check_xml(eight_gpu_node(), expected_gpus=8)
    assert report.ok and [g.index for g in report.gpus] == list(range(8))


@pytest.mark.parametrize("mutate,want", [
    (set_text("ecc_errors/volatile/dram_uncorrectable", "2"), "GPU 3 (00000000:13:00.0): 2 uncorrectable ECC"),
    (set_text("ecc_errors/volatile/sram_uncorrectable_secded", "1"), "GPU 3 (00000000:13:00.0): 1 uncorrectable ECC"),
    (set_text("remapped_rows/remapped_row_pending", "Yes"), "row remap pending"),
    (set_text("remapped_rows/remapped_row_failure", "Yes"), "row remap failed"),
    (set_text("ecc_errors/unrepairable_memory", "Yes"), "unrepairable memory"),
])
def test_broken_gpu_fails_closed(mutate, want):
    report = check_xml(eight_gpu_node(mutate), expected_gpus=8)
    assert not report.ok
    assert any(want in p for p in report.problems), report.problems
    assert all(p.startswith("GPU 3 ") for p in report.problems)


def test_missing_gpu():
    report = check_xml(eight_gpu_node(drop=1), expected_gpus=8)
    assert report.problems == ["expected 8 GPUs, found 7"]


@pytest.mark.parametrize("text", ["", "<html/>", "<nvidia_smi_log><gpu>"])
def test_unreadable_output_raises(text):
    with pytest.raises(HealthInputError):
        check_xml(text, expected_gpus=8)
