"""Write benchmark figures into BENCHMARKS.md, one fenced section per benchmark, so re-running
one benchmark replaces its own section and leaves the others alone."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import resource
from pathlib import Path

from pipelines.common.io import write_text

# The repository's file, also when PIPELINES_ROOT puts a benchmark's outputs in a scratch root.
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nFigures measured on this project's machines; each section names its command.\n"


def machine() -> str:
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:  # pragma: no cover
        mem = "? RAM"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def peak_rss_mb(children: bool = False) -> float:
    """Peak RSS in MB of this process (its own address space: VmHWM, where Linux has it; getrusage's
    ru_maxrss would also count a parent's memory at fork time), or of its waited-for children."""
    if not children:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def update_section(name: str, body: str, command: str) -> Path:
    """Replace (or append) the section named ``name`` in BENCHMARKS.md."""
    today = _dt.date.today().isoformat()
    block = (f"<!-- bench:{name} -->\n## {name}\n\n"
             f"Command: `{command}`  \nMachine: {machine()}  \nDate: {today}\n\n{body.strip()}\n"
             f"<!-- /bench:{name} -->\n")
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    return write_text(BENCHMARKS_MD, text)
