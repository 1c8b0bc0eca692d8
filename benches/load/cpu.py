"""Where the CPU went during a load run (benches/load/cluster): two snapshots of /proc, DELAY
seconds after the start and WINDOW seconds later, so the window sits inside the wrk run (wrk
itself must be running at both snapshots). Prints JSON: the machine's time (user, system,
irq + softirq, idle, in cores: CPU-seconds per second) and each process group's time in
cores, from utime + stime of /proc/<pid>/stat (all of a process's threads):
  - each `label=pid[,pid]` argument (the keyplane nodes);
  - `postgres`: every process named postgres (postmaster, backends, WAL writer…);
  - `wrk`: every process named wrk;
  - `other`: every other process, with the busiest few named.

usage: cpu.py DELAY WINDOW [label=pid[,pid]...]
"""
import json
import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def processes():
    """pid -> (name, start time, ticks of CPU so far)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # Fields 14 and 15 of stat(5) (utime, stime), counted from `state` (field 3) here.
        out[int(entry)] = (name, fields[19], int(fields[11]) + int(fields[12]))
    return out


def machine():
    """Ticks of the whole machine: user, system, irq, idle."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return {
        "user": user + nice,
        "system": system,
        "irq": irq + softirq,
        "idle": idle + iowait,
        "steal": steal,
    }


def main():
    delay, window = float(sys.argv[1]), float(sys.argv[2])
    labels = {}
    for arg in sys.argv[3:]:
        label, pids = arg.split("=", 1)
        for pid in pids.split(","):
            labels[int(pid)] = label
    time.sleep(delay)
    p0, m0, t0 = processes(), machine(), time.monotonic()
    time.sleep(window)
    p1, m1, t1 = processes(), machine(), time.monotonic()
    seconds = t1 - t0
    cores = lambda ticks: ticks / HZ / seconds  # noqa: E731
    groups = {label: 0 for label in labels.values()}
    groups.update({"postgres": 0, "wrk": 0, "other": 0})
    others = {}
    for pid, (name, started, ticks) in p1.items():
        before = p0.get(pid)
        # A process born during the window (or a reused pid) counts from zero.
        spent = ticks - before[2] if before and before[1] == started else ticks
        if pid in labels:
            group = labels[pid]
        elif name in ("postgres", "wrk"):
            group = name
        else:
            group = "other"
            others[name] = others.get(name, 0) + spent
        groups[group] += spent
    print(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "cpus": os.cpu_count(),
                "machine": {k: round(cores(m1[k] - m0[k]), 3) for k in m0},
                "groups": {k: round(cores(v), 3) for k, v in groups.items()},
                "other_top": [
                    [name, round(cores(v), 3)]
                    for name, v in sorted(others.items(), key=lambda kv: -kv[1])[:4]
                    if v > 0
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
