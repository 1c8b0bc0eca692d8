"""Turn one load-harness run into benches/results/load-<date>.md and .png (load-<date>-2… when
that day already has a run, so no result file is overwritten), with the ratios
the benchmarks issue asks for (all from the same run)."""
import datetime
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, cores, connections, duration = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = {}
for line in pathlib.Path(results).read_text().splitlines():
    name, rps, p50, p99, errs = line.split()
    rows[name] = {
        "rps": float(rps) if rps != "-" else None,
        "p50": float(p50) if p50 != "-" else None,
        "p99": float(p99) if p99 != "-" else None,
        "errors": int(errs),
    }


def ratio(a, b, key="rps"):
    try:
        return rows[a][key] / rows[b][key]
    except (KeyError, TypeError, ZeroDivisionError):
        return None


scales = sorted(
    (int(n.split("-")[2]), n) for n in rows if n.startswith("encrypt-at-")
)
ratios = [
    ("encrypt (envelope) / no-op ceiling", ratio("encrypt-envelope", "healthz"), ">= 0.60"),
    ("encrypt (hsm) / raw SoftHSM2 AES-GCM", ratio("encrypt-hsm", "hsm-raw"), ">= 0.70"),
]
if len(scales) >= 2:
    ratios.append(
        (
            f"p99 at {scales[-1][0]} keys / p99 at {scales[0][0]} keys",
            ratio(scales[-1][1], scales[0][1], "p99"),
            "<= 1.5",
        )
    )

date = datetime.date.today().isoformat()
out = pathlib.Path(__file__).resolve().parents[1] / "results"
out.mkdir(exist_ok=True)
stem, n = f"load-{date}", 1
while (out / f"{stem}.md").exists():
    n += 1
    stem = f"load-{date}-{n}"
md = [
    f"# Load run {date}",
    "",
    f"{cores} cores; wrk {connections} connections, {duration} per row; HTTPS on loopback;"
    " authorization and audit on. One run: compare ratios, not absolute numbers.",
    "",
    "| row | requests/s | p50 ms | p99 ms | non-2xx |",
    "| --- | ---: | ---: | ---: | ---: |",
]
for name, r in rows.items():
    fmt = lambda v: "-" if v is None else f"{v:,.0f}" if v > 100 else f"{v}"  # noqa: E731
    md.append(f"| {name} | {fmt(r['rps'])} | {fmt(r['p50'])} | {fmt(r['p99'])} | {r['errors']} |")
md += ["", "| ratio | measured | target |", "| --- | ---: | --- |"]
for label, value, target in ratios:
    md.append(f"| {label} | {'-' if value is None else f'{value:.2f}'} | {target} |")
(out / f"{stem}.md").write_text("\n".join(md) + "\n")

fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
named = [(n, r["rps"]) for n, r in rows.items() if r["rps"] and not n.startswith("encrypt-at-")]
a.barh([n for n, _ in named], [v for _, v in named], color="#4477aa")
a.set_xlabel("requests/s (higher is better)")
a.set_title(f"throughput, {connections} connections, {cores} cores")
a.invert_yaxis()
if scales:
    b.plot([s for s, _ in scales], [rows[n]["p50"] for _, n in scales], "o-", label="p50")
    b.plot([s for s, _ in scales], [rows[n]["p99"] for _, n in scales], "o-", label="p99")
    b.set_xscale("log")
    b.set_xlabel("keys in the database")
    b.set_ylabel("encrypt latency, ms")
    b.set_title("encrypt latency vs key count")
    b.legend()
fig.tight_layout()
fig.savefig(out / f"{stem}.png", dpi=110)
print((out / f"{stem}.md").read_text())
