"""Sum up the long fuzz runs from their libFuzzer logs ($EDGESNN_FUZZ_WORK/fuzz-<target>/log.txt, /tmp unless set).

    python native/fuzz/report.py [TARGET ...]        default: load run model

Per target: fuzzing processes (a finding ends one and run.sh starts the next), executions, fuzzing
seconds (libFuzzer's own "Done N runs in S second(s)", or runs / exec/s for a process cut short),
the last coverage line (cov: engine edges reached, ft: features, corp: corpus), and the inputs
written to crashes/ (findings, timeouts, out-of-memory).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+.*?exec/s: (\d+)")
DONE = re.compile(r"^Done (\d+) runs in (\d+) second")


ROUND = re.compile(r"^== fuzz_\w+ on (\S+) from (\S+)")


def rounds(log: Path) -> list[tuple[str, list[str]]]:
    """The log split at run.sh's "== fuzz_X on SRC from TIME" lines: (heading, lines) per round."""
    parts: list[tuple[str, list[str]]] = [("(before the first marked round)", [])]
    for line in log.read_text(errors="replace").splitlines():
        if (match := ROUND.match(line)):
            parts.append((f"from {match[2]} on {match[1]}", []))
        else:
            parts[-1][1].append(line)
    return [part for part in parts if any(line.startswith("INFO: Seed:") for line in part[1])]


def summarize(lines: list[str], crashes_dir: Path) -> dict:
    """Processes, executions, seconds and the last status line of one round's log lines."""
    processes, runs, seconds = 0, 0, 0.0
    last_status = None
    current = None  # (runs, exec/s) of the process being read
    for line in lines:
        if line.startswith("INFO: Seed:"):
            if current:  # the previous process ended without "Done" (a finding): estimate its time
                runs += current[0]
                seconds += current[0] / max(current[1], 1)
            processes += 1
            current = (0, 1)
        elif (match := STATUS.match(line)):
            current = (int(match[1]), int(match[5]))
            last_status = f"cov {match[2]}, ft {match[3]}, corpus {match[4]}"
        elif (match := DONE.match(line)):
            runs += int(match[1])
            seconds += int(match[2])
            current = None
    if current:
        runs += current[0]
        seconds += current[0] / max(current[1], 1)
    crashes = sorted(path.name for path in crashes_dir.glob("*"))
    return {"processes": processes, "runs": runs, "seconds": seconds, "last": last_status, "crashes": crashes}


def main(targets: list[str]) -> None:
    total_seconds = 0.0
    for target in targets:
        log = Path(os.environ.get("EDGESNN_FUZZ_WORK", "/tmp")) / f"fuzz-{target}" / "log.txt"   # as run.sh
        if not log.is_file():
            print(f"{target}: no log at {log}")
            continue
        for heading, lines in rounds(log):
            s = summarize(lines, log.parent / "crashes")
            total_seconds += s["seconds"]
            print(f"{target} {heading}: {s['processes']} processes, {s['runs']:,} executions in "
                  f"{s['seconds'] / 60:.1f} min ({s['runs'] / max(s['seconds'], 1):.0f}/s); last: {s['last']}")
        crashes = sorted(path.name for path in (log.parent / "crashes").glob("*"))
        print(f"{target}: {len(crashes)} inputs in crashes/{': ' + ', '.join(crashes) if crashes else ''}")
    print(f"total fuzzing time: {total_seconds / 60:.1f} min")


if __name__ == "__main__":
    main(sys.argv[1:] or ["load", "run", "model"])
