"""Sum up the long fuzz runs from their libFuzzer logs (/tmp/fuzz-<target>/log.txt).

    python native/fuzz/report.py [TARGET ...]        default: load run model

Per target: fuzzing processes (a finding ends one and run.sh starts the next), executions, fuzzing
seconds (libFuzzer's own "Done N runs in S second(s)", or runs / exec/s for a process cut short),
the last coverage line (cov: engine edges reached, ft: features, corp: corpus), and the inputs
written to crashes/ (findings, timeouts, out-of-memory).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+.*?exec/s: (\d+)")
DONE = re.compile(r"^Done (\d+) runs in (\d+) second")


def summarize(log: Path) -> dict:
    processes, runs, seconds = 0, 0, 0.0
    last_status = None
    current = None  # (runs, exec/s) of the process being read
    for line in log.read_text(errors="replace").splitlines():
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
    crashes = sorted(path.name for path in (log.parent / "crashes").glob("*"))
    return {"processes": processes, "runs": runs, "seconds": seconds, "last": last_status, "crashes": crashes}


def main(targets: list[str]) -> None:
    total_seconds = 0.0
    for target in targets:
        log = Path(f"/tmp/fuzz-{target}/log.txt")
        if not log.is_file():
            print(f"{target}: no log at {log}")
            continue
        s = summarize(log)
        total_seconds += s["seconds"]
        print(f"{target}: {s['processes']} processes, {s['runs']:,} executions in {s['seconds'] / 60:.1f} min "
              f"({s['runs'] / max(s['seconds'], 1):.0f}/s); last: {s['last']}; "
              f"{len(s['crashes'])} inputs in crashes/{': ' + ', '.join(s['crashes']) if s['crashes'] else ''}")
    print(f"total fuzzing time: {total_seconds / 60:.1f} min")


if __name__ == "__main__":
    main(sys.argv[1:] or ["load", "run", "model"])
