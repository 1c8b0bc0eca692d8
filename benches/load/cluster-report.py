"""Turn one run of benches/load/cluster into benches/results/cluster-<date>.md
(cluster-<date>-2… when that day already has one): the wrk rows, the ratios issue 20 asks
for, the CPU per process group, and on PostgreSQL what keyplane's connections did and how
long they waited for the audit chains' advisory locks.

usage: cluster-report.py ROOT CONNECTIONS THREADS DURATION NODES SAMPLE_DELAY WINDOW
"""
import datetime
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1])
connections, threads, duration = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
nodes, delay, window = int(sys.argv[5]), sys.argv[6], sys.argv[7]

rows = {}
order = []
for line in (root / "results.txt").read_text().splitlines():
    name, rps, p50, p99, errs = line.split()
    rows[name] = {"rps": float(rps), "p50": float(p50), "p99": float(p99), "errors": int(errs)}
    order.append(name)
settings = (root / "settings.txt").read_text().splitlines()


def setup(prefix):
    """sqlite-1 / pg-fsync-off-3 -> words."""
    parts = prefix.split("-")
    n = int(parts[-1])
    where = "SQLite" if parts[0] == "sqlite" else f"PostgreSQL, fsync {parts[2]}"
    return f"{where}, {n} node" + ("s" if n > 1 else "")


def split(name):
    """Row name -> (setup prefix, operation)."""
    for op in ("encrypt", "create-key"):
        if name.endswith("-" + op):
            return name[: -len(op) - 1], op
    raise ValueError(name)


def cpu(name):
    path = root / "runs" / name / "cpu.json"
    return json.loads(path.read_text()) if path.exists() else None


def pg(name):
    """The PostgreSQL sample of a run: window, activity, lock, statements."""
    path = root / "runs" / name / "pg.tsv"
    if not path.exists():
        return None
    out = {"activity": [], "holder": [], "statements": []}
    for line in path.read_text().splitlines():
        f = line.split("\t")
        kind = f[0]
        if kind == "window":
            out["seconds"], out["samples"] = float(f[1]), int(f[2])
            out["records"], out["xids"] = int(f[3]), int(f[4])
        elif kind == "activity":
            out["activity"].append((f[1] or "-", f[2], float(f[3])))
        elif kind == "lock-waiting":
            out["waiting"] = float(f[1])
        elif kind == "lock-holder":
            out["holder"].append((f[1], float(f[2])))
        elif kind == "statement":
            out["statements"].append((int(f[1]), float(f[2]), float(f[3]), f[4]))
    return out


def ratio(a, b):
    try:
        return rows[a]["rps"] / rows[b]["rps"]
    except (KeyError, ZeroDivisionError):
        return None


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def node_cores(c):
    return sum(v for k, v in c["groups"].items() if k.startswith("node"))


date = datetime.date.today().isoformat()
out = pathlib.Path("benches/results") / f"cluster-{date}.md"
n = 2
while out.exists():
    out = pathlib.Path("benches/results") / f"cluster-{date}-{n}.md"
    n += 1

fsyncs = []
for name in order:
    prefix, _ = split(name)
    if prefix.startswith("pg-fsync-"):
        f = prefix.split("-")[2]
        if f not in fsyncs:
            fsyncs.append(f)

md = [f"# Cluster load run {date} (benches/load/cluster)", ""]
md.append(
    f"One run on this machine; compare ratios, not absolute numbers. wrk over HTTPS on loopback, "
    f"{duration} per row, {connections} connections and {threads} threads against one node; "
    f"against {nodes} nodes one wrk with a thread per node and {connections // nodes} connections "
    f"to each ({connections // nodes * nodes} in all), so one latency distribution covers all "
    f"nodes. `encrypt`: 32 B with an envelope key; `create-key`: a new envelope key per request. "
    f"Authorization and audit on. CPU and PostgreSQL samples cover {window} s of each row, "
    f"{delay} s after its start."
)
md.append("")
md.append("Settings: " + "; ".join(s for s in settings if not s.startswith("pg-settings")) + ".")
for s in settings:
    if s.startswith("pg-settings"):
        f = s.split("|")
        md.append(
            f"PostgreSQL: {f[1].split(' on ')[0]}; fsync {f[2]}, full_page_writes {f[3]}, "
            f"synchronous_commit {f[4]}, shared_buffers {f[5]}; pg_stat_statements loaded; a "
            f"throwaway cluster on a Unix socket (scripts/pg-cluster), on the same 2 cores."
        )
md.append("")

md += ["## Throughput", ""]
md.append("| setup | operation | requests/s | p50 ms | p99 ms | non-2xx |")
md.append("| --- | --- | ---: | ---: | ---: | ---: |")
for name in order:
    prefix, op = split(name)
    r = rows[name]
    md.append(
        f"| {setup(prefix)} | {op} | {r['rps']:,.0f} | {r['p50']} | {r['p99']} | {r['errors']} |"
    )
retried = []
for name in order:
    d = root / "runs" / name
    kept = (d / "row").read_text()
    tries = sorted(d.glob("try*"))
    if len(tries) > 1:
        parts = []
        for t in tries:
            rps = float((t / "row").read_text().split()[1])
            rest = json.loads((t / "cpu.json").read_text())["rest"]
            mark = " (kept)" if (t / "row").read_text() == kept else ""
            parts.append(f"{rps:,.0f} req/s with {rest:.2f} cores outside the run{mark}")
        retried.append(f"{name}: " + ", ".join(parts))
md.append("")
if retried:
    md.append(
        "This machine was shared with other work (builds) during the run. A row during which "
        "processes outside the run took more than 0.25 cores was tried again (at most "
        "TRIES times), and the least disturbed try is kept:"
    )
    md.append("")
    md += [f"- {r}" for r in retried]
    md.append("")

md += ["## Ratios", ""]
md.append("| ratio | encrypt | create-key |")
md.append("| --- | ---: | ---: |")
for f in fsyncs:
    one, many = f"pg-fsync-{f}-1", f"pg-fsync-{f}-{nodes}"
    md.append(
        f"| PostgreSQL (fsync {f}), 1 node / SQLite, 1 node | "
        f"**{fmt(ratio(one + '-encrypt', 'sqlite-1-encrypt'))}** (target >= 0.80) | "
        f"{fmt(ratio(one + '-create-key', 'sqlite-1-create-key'))} |"
    )
    md.append(
        f"| PostgreSQL (fsync {f}), {nodes} nodes / 1 node | "
        f"{fmt(ratio(many + '-encrypt', one + '-encrypt'))} | "
        f"{fmt(ratio(many + '-create-key', one + '-create-key'))} |"
    )
    md.append(
        f"| PostgreSQL (fsync {f}), {nodes} nodes / SQLite, 1 node | "
        f"{fmt(ratio(many + '-encrypt', 'sqlite-1-encrypt'))} | "
        f"{fmt(ratio(many + '-create-key', 'sqlite-1-create-key'))} |"
    )
if "on" in fsyncs and "off" in fsyncs:
    for n_ in (1, nodes):
        md.append(
            f"| fsync on / fsync off, {n_} node{'s' if n_ > 1 else ''} | "
            f"{fmt(ratio(f'pg-fsync-on-{n_}-encrypt', f'pg-fsync-off-{n_}-encrypt'))} | "
            f"{fmt(ratio(f'pg-fsync-on-{n_}-create-key', f'pg-fsync-off-{n_}-create-key'))} |"
        )
md.append("")

md += ["## Where the CPU went", ""]
md.append(
    "Cores busy (CPU-seconds per second, from /proc/<pid>/stat utime + stime, all threads) "
    "during the sampled window; the machine has "
    f"{(cpu(order[0]) or {}).get('cpus', '?')}. `interrupts`: the machine's irq and softirq "
    "time (mostly loopback networking), which no process's counters hold. `outside`: the "
    "machine's user and system time less the nodes', PostgreSQL's and wrk's: other processes "
    "(the samplers take about 0.03), those that ended within the window too. CPU µs per "
    "request: the group's cores divided by requests/s."
)
md.append("")
md.append(
    "| setup | operation | keyplane (each node) | PostgreSQL | wrk | interrupts | outside | idle | "
    "keyplane µs/req | PostgreSQL µs/req |"
)
md.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
others = {}
for name in order:
    c = cpu(name)
    if not c:
        continue
    prefix, op = split(name)
    g = c["groups"]
    m = c["machine"]
    nodes_c = node_cores(c)
    each = [f"{v:.2f}" for k, v in sorted(g.items()) if k.startswith("node")]
    rps = rows[name]["rps"]
    detail = f" ({' + '.join(each)})" if len(each) > 1 else ""
    md.append(
        f"| {setup(prefix)} | {op} | {nodes_c:.2f}{detail} | {g['postgres']:.2f} | "
        f"{g['wrk']:.2f} | {m['irq']:.2f} | {c['rest']:.2f} | {m['idle']:.2f} | "
        f"{nodes_c * 1e6 / rps:.0f} | {g['postgres'] * 1e6 / rps:.0f} |"
    )
    if c["rest"] > 0.1:
        others[name] = c
md.append("")
if others:
    md.append("Rows with more than 0.1 cores outside the run, and the busiest processes there:")
    md.append("")
    for name, c in others.items():
        md.append(
            f"- {name}: {c['rest']:.2f} ("
            + ", ".join(f"{p} {v:.2f}" for p, v in c["other_top"] if v >= 0.01)
            + ")"
        )
    md.append("")

pgs = {name: pg(name) for name in order}
pgs = {k: v for k, v in pgs.items() if v}
if pgs:
    md += ["## PostgreSQL: the audit chains' advisory locks", ""]
    md.append(
        "Each node writes audit chains of its own (host/src/audit/chains.rs): its group-commit "
        "writers append a batch of `encrypt` records with one `INSERT` and no lock; each "
        "`create-key`'s own transaction takes its node's chain lock, "
        "`pg_advisory_xact_lock(CHAIN_LOCK + chain)`, held to the transaction's end, before it "
        "reads that chain's head (no node waits for another's). "
        "Sampled every ~10 ms in pg_stat_activity and pg_locks: the share of samples with the "
        "lock held, the mean count of connections waiting for it, and (Little's law) the mean "
        "wait per write transaction = mean waiters / write transactions per second. "
        "`pg_stat_statements` gives the same wait directly: the mean execution time of "
        "`SELECT pg_advisory_xact_lock($1)`. Write transactions are transaction ids assigned "
        "(audit batches, `create-key`s, usage-counter flushes)."
    )
    md.append("")
    md.append(
        "| setup | operation | samples | lock held | mean waiters | write tx/s | audit records/s | "
        "records per tx | lock held per tx, ms | wait per tx (Little), ms | "
        "`pg_advisory_xact_lock` calls, mean ms | p50 ms |"
    )
    md.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, p in pgs.items():
        prefix, op = split(name)
        held = 1 - dict(p["holder"]).get("free", 0.0)
        tx = p["xids"] / p["seconds"]
        recs = p["records"] / p["seconds"]
        adv = [s for s in p["statements"] if "pg_advisory_xact_lock" in s[3]]
        adv_s = f"{adv[0][0]:,}, {adv[0][2] / 1000:.3f}" if adv else "-"
        md.append(
            f"| {setup(prefix)} | {op} | {p['samples']} | {held:.0%} | {p['waiting']:.2f} | "
            f"{tx:,.0f} | {recs:,.0f} | {recs / tx if tx else 0:.1f} | "
            f"{held / tx * 1000 if tx else 0:.3f} | {p['waiting'] / tx * 1000 if tx else 0:.3f} | "
            f"{adv_s} | {rows[name]['p50']} |"
        )
    md.append("")
    md.append(
        "What the lock's holder was doing (share of samples; `idle in transaction "
        "Client:ClientRead` = PostgreSQL waits for the node's next statement, i.e. a round "
        "trip or the node's CPU; `active running` = executing; `IO:WALSync`/`LWLock:WALWrite` = "
        "flushing its commit):"
    )
    md.append("")
    for name, p in pgs.items():
        md.append(
            f"- {name}: " + ", ".join(f"{h} {s:.0%}" for h, s in p["holder"] if s >= 0.005)
        )
    md.append("")
    md.append(
        "keyplane's connections by state and wait event (mean count over the samples; the "
        f"pool holds at most 16 per node, one of them the LISTEN connection):"
    )
    md.append("")
    for name, p in pgs.items():
        md.append(
            f"- {name}: "
            + ", ".join(f"{s} {w} {v:.2f}" for s, w, v in p["activity"] if v >= 0.01)
        )
    md.append("")
    md += ["### Statements (pg_stat_statements over the window)", ""]
    for name, p in pgs.items():
        md.append(f"{name} ({p['records']:,} audit records, {rows[name]['rps']:,.0f} req/s):")
        md.append("")
        md.append("| calls | total ms | mean µs | statement |")
        md.append("| ---: | ---: | ---: | --- |")
        for calls, total, mean, q in p["statements"]:
            md.append(f"| {calls:,} | {total:,.0f} | {mean:,.0f} | `{q.replace('|', '/')}` |")
        md.append("")

out.write_text("\n".join(md) + "\n")
print(f"wrote {out}")
print("\n".join(md))
