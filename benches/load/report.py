"""Turn one load-harness run into benches/results/load-<date>.md and .png (load-<date>-2… when
that day already has a run, so no result file is overwritten), with the ratios
the benchmarks issue asks for and keyplane beside its peer, OpenBao Transit (all from the
same run). A batch row (named `...batch-<operation>-<items>`) is also given in items/s, its
requests/s times its item count."""
import datetime
import os
import pathlib
import re
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


def batch_items(name):
    """The item count of a batch row (batch-encrypt-100: 100), None for other rows."""
    m = re.search(r"(?:^|-)batch-.+-(\d+)$", name)
    return int(m.group(1)) if m else None


for name, r in rows.items():
    n = batch_items(name)
    r["items"] = r["rps"] * n if n and r["rps"] is not None else None


def rate(name):
    """What a row does per second: items for a batch row, requests otherwise."""
    return rows[name]["items"] if batch_items(name) else rows[name]["rps"]


def ratio(a, b, key="rps"):
    try:
        return rows[a][key] / rows[b][key]
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def rate_ratio(a, b):
    """rate(a) / rate(b): items/s of a batch row against another row's."""
    try:
        return rate(a) / rate(b)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


scales = sorted(
    (int(n.split("-")[2]), n) for n in rows if n.startswith("encrypt-at-")
)
# The targets keyplane is held to (issue 18). "encrypt (hsm) >= 0.70 of raw SoftHSM2" is
# retired: raw SoftHSM2 on a session object outruns the HTTPS ceiling, so the hsm row is held
# to the envelope row instead.
ratios = [
    ("encrypt (envelope) / no-op ceiling", ratio("encrypt-envelope", "healthz"), ">=", 0.60),
    ("encrypt (hsm) / encrypt (envelope)", ratio("encrypt-hsm", "encrypt-envelope"), ">=", 0.80),
    (
        "AWS front encrypt (SigV4) / native encrypt",
        ratio("aws-encrypt-envelope", "encrypt-envelope"),
        ">=",
        0.90,
    ),
]
ratios.append(
    (
        "Transit front encrypt / native encrypt",
        ratio("transit-encrypt", "encrypt-envelope"),
        ">=",
        0.90,
    )
)
ratios.append(
    (
        "Transit batch_input items/s (100 a batch) / single encrypt requests/s",
        rate_ratio("transit-batch-encrypt-100", "encrypt-envelope"),
        ">=",
        10.0,
    )
)
ratios.append(
    (
        "batch encrypt items/s (100 a batch) / single encrypt requests/s",
        rate_ratio("batch-encrypt-100", "encrypt-envelope"),
        ">=",
        10.0,
    )
)
if len(scales) >= 2:
    ratios.append(
        (
            f"p99 at {scales[-1][0]} keys / p99 at {scales[0][0]} keys",
            ratio(scales[-1][1], scales[0][1], "p99"),
            "<=",
            1.5,
        )
    )

# keyplane's row and OpenBao Transit's row for the same operation on the same load.
PEER_ROWS = [
    ("health endpoint", "healthz", "openbao-health"),
    ("encrypt 32 B", "encrypt-envelope", "openbao-encrypt"),
    ("encrypt 32 B, Transit front", "transit-encrypt", "openbao-encrypt"),
    ("batch encrypt, 100 x 32 B (items/s)", "batch-encrypt-100", "openbao-batch-encrypt-100"),
    ("batch encrypt, Transit front (items/s)", "transit-batch-encrypt-100", "openbao-batch-encrypt-100"),
    ("decrypt", "decrypt", "openbao-decrypt"),
    ("generate data key", "generate-data-key", "openbao-generate-data-key"),
    ("sign ECDSA P-256", "sign-ecdsa-p256", "openbao-sign-ecdsa-p256"),
]
side_by_side = [
    (label, ours, theirs)
    for label, ours, theirs in PEER_ROWS
    if ours in rows and theirs in rows and rate(ours) and rate(theirs)
]

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
    "| row | requests/s | items/s | p50 ms | p99 ms | non-2xx |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
]
for name, r in rows.items():
    fmt = lambda v: "-" if v is None else f"{v:,.0f}" if v > 100 else f"{v}"  # noqa: E731
    md.append(
        f"| {name} | {fmt(r['rps'])} | {fmt(r['items'])} | {fmt(r['p50'])} | {fmt(r['p99'])}"
        f" | {r['errors']} |"
    )
md += ["", "| ratio | measured | target | held |", "| --- | ---: | --- | --- |"]
for label, value, op, target in ratios:
    held = "-" if value is None else ("yes" if (value >= target if op == ">=" else value <= target) else "**no**")
    shown = "-" if value is None else f"{value:.2f}"
    md.append(f"| {label} | {shown} | {op} {target:.2f} | {held} |")
md += [
    "",
    "Targets: envelope encrypt >= 0.60 of the same server's `/healthz`; `hsm` encrypt >= 0.80 of"
    " envelope encrypt (the old >= 0.70 of raw SoftHSM2 is retired: raw SoftHSM2 on a session"
    " object outruns the HTTPS ceiling); the AWS front's encrypt, signature checked, >= 0.90 of"
    " the native encrypt; p99 at 1M keys <= 1.5x p99 at 1k; encrypt in batches of 100"
    " (`POST /v1/batch`, items/s = requests/s x 100) >= 10x single encrypt requests/s. A batch"
    " row's non-2xx also counts answers holding an item's error.",
]
if side_by_side:
    version = os.environ.get("OPENBAO_VERSION_RUN", "OpenBao")
    md += [
        "",
        f"Beside the peer: {version} Transit, same machine, same wrk load, run after keyplane's"
        " rows; raft storage, its file audit device on, a batch token limited by one ACL policy"
        " (keyplane's `encrypt` row uses an envelope key; its sign key is in SoftHSM2, OpenBao's"
        " in its own process). keyplane's `/healthz` answers a constant; OpenBao's"
        " `/v1/sys/health` also reads its node's state, so it is not quite a no-op.",
        "",
        "| operation | keyplane req/s | OpenBao req/s | keyplane / OpenBao | keyplane p99 ms"
        " | OpenBao p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, ours, theirs in side_by_side:
        o, t = rows[ours], rows[theirs]
        md.append(
            f"| {label} | {rate(ours):,.0f} | {rate(theirs):,.0f} | {rate_ratio(ours, theirs):.2f}"
            f" | {o['p99']} | {t['p99']} |"
        )
    md += [
        "",
        "Batch rows are in items/s (requests/s x 100) and p99 per batch: keyplane's"
        " `POST /v1/batch` of 100 `encrypt` items (each authorized and audited on its own),"
        " OpenBao's Transit encrypt with a `batch_input` of 100 (one request and one response"
        " entry in its audit log for the whole batch).",
    ]
    peer_ratio = ratio("openbao-encrypt", "openbao-health")
    bare_ratio = ratio("openbao-encrypt-no-audit", "openbao-health")
    ours = "-" if ratios[0][1] is None else f"{ratios[0][1]:.2f}"
    if peer_ratio is not None:
        line = (
            f"Each one's encrypt / its own health endpoint: keyplane {ours},"
            f" OpenBao {peer_ratio:.2f}"
        )
        if bare_ratio is not None:
            line += (
                f", OpenBao without its audit device {bare_ratio:.2f}"
                f" ({rows['openbao-encrypt-no-audit']['rps']:,.0f} req/s)"
            )
        md += ["", line + "."]
(out / f"{stem}.md").write_text("\n".join(md) + "\n")

fig, (a, c, b) = plt.subplots(1, 3, figsize=(18, 4.5))
# Requests/s of single requests; a batch row would be its items/s, on another scale.
named = [
    (n, r["rps"])
    for n, r in rows.items()
    if r["rps"] and not n.startswith(("encrypt-at-", "openbao-")) and not batch_items(n)
]
a.barh([n for n, _ in named], [v for _, v in named], color="#4477aa")
a.set_xlabel("requests/s (higher is better)")
a.set_title(f"throughput, {connections} connections, {cores} cores")
a.invert_yaxis()
# Single requests only: a batch pair, in items/s, would be on another scale (it is in the table).
charted = [row for row in side_by_side if not batch_items(row[1])]
if charted:
    ys = range(len(charted))
    h = 0.4
    c.barh([y - h / 2 for y in ys], [rows[o]["rps"] for _, o, _ in charted], h,
           label="keyplane", color="#4477aa")
    c.barh([y + h / 2 for y in ys], [rows[t]["rps"] for _, _, t in charted], h,
           label="OpenBao Transit", color="#cc6677")
    c.set_yticks(list(ys), [label for label, _, _ in charted])
    c.set_xlabel("requests/s (higher is better)")
    c.set_title("beside the peer, same run")
    c.invert_yaxis()
    c.legend()
else:
    c.set_axis_off()
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
