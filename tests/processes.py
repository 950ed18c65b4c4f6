"""Memory of a process and of its children, from /proc (serve runs its worker in a child).

Shared by the tests and the benchmarks (bench/_common.py imports it)."""
from __future__ import annotations

import os


def vm_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM/... of a process in KiB, from /proc/PID/status."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("Vm"):
                name, value = line.split(":", 1)
                values[name] = int(value.split()[0])
    return values


def process_tree(pid: int) -> list[int]:
    """pid and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, waiting = [], [pid]
    while waiting:
        current = waiting.pop()
        found.append(current)
        waiting.extend(children.get(current, ()))
    return found


def tree_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM summed over pid and its descendants, in KiB. The sum of the peaks is
    an upper bound of the tree's peak: the processes need not peak at the same moment."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for member in process_tree(pid):
        try:
            status = vm_status(member)
        except OSError:
            continue  # it ended meanwhile
        for key in total:
            total[key] += status.get(key, 0)
    return total
