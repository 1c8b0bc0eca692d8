"""Where the CPU went during a load run (benches/load/cluster): two snapshots of /proc, DELAY
seconds after the start and WINDOW seconds later, so the window sits inside the wrk run (wrk
itself must be running at both snapshots). Prints JSON: the machine's time (user, system,
irq + softirq, idle, in cores: CPU-seconds per second) and each process group's time in
cores, from utime + stime of /proc/<pid>/stat (all of a process's threads):
  - each `label=pid[,pid]` argument (the keyplane nodes);
  - `postgres`: every process named postgres (postmaster, backends, WAL writer…);
  - `wrk`: every process named wrk;
  - `other`: every other process, with the busiest few named.

`rest` is the machine's user and system time less the nodes', PostgreSQL's and wrk's: every
other process, those that ended within the window too (a build's compilers). Interrupts
(`irq`, mostly loopback networking in softirq) are counted apart, not in any process.

usage: cpu.py DELAY WINDOW [label=pid[,pid]...]
       cpu.py --idle                     exit 0 if the machine was under 0.15 cores busy for 1 s
       cpu.py --disturbed FILE           exit 0 if the run of FILE (this script's JSON) had a
                                         `rest` over 0.25 cores
       cpu.py --least-disturbed FILE...  the directory name of the FILE with the least `rest`
       cpu.py --others FILE              `rest` and the busiest other processes of FILE
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


def busy(m):
    """Cores the machine was busy (not idle, not stolen by the hypervisor)."""
    return m["user"] + m["system"] + m["irq"]


def rest(path):
    with open(path) as f:
        return json.load(f)["rest"]


def main():
    if sys.argv[1] == "--idle":
        m0, t0 = machine(), time.monotonic()
        time.sleep(1)
        m1, t1 = machine(), time.monotonic()
        sys.exit(0 if busy({k: m1[k] - m0[k] for k in m0}) / HZ / (t1 - t0) < 0.15 else 1)
    if sys.argv[1] == "--disturbed":
        sys.exit(0 if rest(sys.argv[2]) > 0.25 else 1)
    if sys.argv[1] == "--least-disturbed":
        print(os.path.basename(os.path.dirname(min(sys.argv[2:], key=rest))))
        return
    if sys.argv[1] == "--others":
        with open(sys.argv[2]) as f:
            r = json.load(f)
        names = ", ".join(f"{n} {c:.2f}" for n, c in r["other_top"])
        print(f"{r['rest']:.2f} cores outside the run ({names})")
        return
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
    used = {k: cores(m1[k] - m0[k]) for k in m0}
    ours = sum(v for k, v in groups.items() if k != "other")
    print(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "cpus": os.cpu_count(),
                "machine": {k: round(v, 3) for k, v in used.items()},
                "rest": round(max(used["user"] + used["system"] - cores(ours), 0), 3),
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
