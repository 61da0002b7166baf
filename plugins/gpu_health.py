"""GPU health check from `nvidia-smi -q -x`, for the node prolog (fail closed).

What fails a GPU, following NVIDIA's memory-error guidance for A100/H100-class parts:
  - volatile (since driver load) uncorrectable ECC errors, SRAM or DRAM;
  - a pending row remap (the GPU needs a reset before the remap takes effect);
  - a row-remap failure, unrepairable memory, a pending channel/TPC repair;
  - pending page retirement (older parts);
and for the node: fewer GPUs than expected (a GPU fell off the bus).
Aggregate (lifetime) counts are history, not a fault: a healthy GPU that remapped rows in
the past still works — the real H200 fixture has 27 aggregate uncorrectable DRAM errors and
5 uncorrectable remapped rows, all handled, and passes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


@dataclass
class GpuStatus:
    index: int
    bus_id: str
    uuid: str
    name: str
    problems: list[str] = field(default_factory=list)


@dataclass
class HealthReport:
    gpus: list[GpuStatus]
    problems: list[str]  # node-level and per-GPU, one line each

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{len(self.gpus)} GPUs healthy"
        return "; ".join(self.problems)


class HealthInputError(ValueError):
    """The nvidia-smi output could not be read: the check fails closed."""


def _text(el: ET.Element | None, path: str) -> str:
    found = el.find(path) if el is not None else None
    return (found.text or "").strip() if found is not None else ""


def _count(el: ET.Element, path: str) -> int:
    value = _text(el, path)
    try:
        return int(value)
    except ValueError:
        return 0  # "N/A" or absent: this part does not report it


def check_gpu(gpu: ET.Element, index: int) -> GpuStatus:
    minor = _text(gpu, "minor_number")
    status = GpuStatus(
        index=int(minor) if minor.isdigit() else index,
        bus_id=gpu.get("id", ""),
        uuid=_text(gpu, "uuid"),
        name=_text(gpu, "product_name"),
    )
    vol = gpu.find("ecc_errors/volatile")
    if vol is not None:
        unc = sum(_count(vol, tag) for tag in ("dram_uncorrectable", "sram_uncorrectable_parity",
                                              "sram_uncorrectable_secded", "sram_uncorrectable",
                                              "double_bit/total"))
        if unc:
            status.problems.append(f"{unc} uncorrectable ECC error(s) since driver load")
    for path, what in (("ecc_errors/unrepairable_memory", "unrepairable memory"),
                       ("ecc_errors/channel_repair_pending", "memory channel repair pending"),
                       ("ecc_errors/tpc_repair_pending", "TPC repair pending"),
                       ("remapped_rows/remapped_row_pending", "row remap pending (needs a GPU reset)"),
                       ("remapped_rows/remapped_row_failure", "row remap failed"),
                       ("retired_pages/pending_retirement", "page retirement pending"),
                       ("retired_pages/pending_blacklist", "page blacklist pending")):
        if _text(gpu, path).lower() == "yes":
            status.problems.append(what)
    return status


def check_xml(xml_text: str, expected_gpus: int) -> HealthReport:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise HealthInputError(f"cannot parse nvidia-smi XML: {e}") from None
    if root.tag != "nvidia_smi_log":
        raise HealthInputError(f"not nvidia-smi -q -x output (root <{root.tag}>)")
    gpus = [check_gpu(g, i) for i, g in enumerate(root.findall("gpu"))]
    problems = []
    if len(gpus) < expected_gpus:
        problems.append(f"expected {expected_gpus} GPUs, found {len(gpus)}")
    for g in gpus:
        problems += [f"GPU {g.index} ({g.bus_id}): {p}" for p in g.problems]
    return HealthReport(gpus, problems)
