"""Turn one soak run (benches/soak/run) into benches/results/soak-<date>.md and .png.

Arguments: samples file, unpaced req/s, its non-2xx, target req/s, load fraction, window
seconds, warm-up windows, the audit verification's result line. The samples file holds
"start <rss kB> <fds> <threads> <sessions> <heap> <arenas> <anon> <file>" then one line per
window: "<n> <connections> <req/s> <p50 ms> <p99 ms> <non-2xx> <requests> <rss kB> <fds>
<threads> <sessions> <heap> <arenas> <anon> <file>" (the last four: where the RSS is, in kB,
from benches/soak/memory.py).
"""

import datetime
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

samples, peak, peak_errors, target, load, window, warmup, verified = sys.argv[1:9]
window, warmup = int(window), int(warmup)
lines = pathlib.Path(samples).read_text().split("\n")
start = [int(x) for x in lines[0].split()[1:]]
rows = []
for line in lines[1:]:
    if line.strip():
        f = line.split()
        rows.append(
            dict(
                n=int(f[0]), conns=int(f[1]), rps=float(f[2]), p50=float(f[3]), p99=float(f[4]),
                errors=int(f[5]), requests=int(f[6]), rss=int(f[7]), fds=int(f[8]),
                threads=int(f[9]), sessions=int(f[10]), heap=int(f[11]), arenas=int(f[12]),
                anon=int(f[13]), file=int(f[14]),
            )
        )
if not rows:
    sys.exit("no windows in the samples")

total = sum(r["requests"] for r in rows)
errors = sum(r["errors"] for r in rows)
base = rows[min(warmup, len(rows)) - 1]
last = rows[-1]
growth = (last["rss"] - base["rss"]) / base["rss"] * 100
held = [r for r in rows[warmup:]] or rows
mean_rps = sum(r["rps"] for r in held) / len(held)
p99s = sorted(r["p99"] for r in held)

out = pathlib.Path("benches/results")
stem = f"soak-{datetime.date.today().isoformat()}"
n = 2
while (out / f"{stem}.md").exists():
    stem = f"soak-{datetime.date.today().isoformat()}-{n}"
    n += 1

minutes = [r["n"] * window / 60 for r in rows]
fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
axes[0].plot(minutes, [r["rps"] for r in rows], marker=".")
axes[0].axhline(float(target), color="grey", linestyle="--", label=f"target {target}/s")
axes[0].set_ylabel("requests/s")
axes[0].legend()
axes[1].plot(minutes, [r["p99"] for r in rows], marker=".", color="tab:red")
axes[1].set_ylabel("p99 (ms)")
axes[2].plot(minutes, [r["rss"] / 1024 for r in rows], marker=".", color="tab:green")
axes[2].axvline(warmup * window / 60, color="grey", linestyle=":", label="end of warm-up")
axes[2].set_ylabel("RSS (MiB)")
axes[2].set_xlabel("minutes")
axes[2].legend()
fig.suptitle(f"keyplane soak: {len(rows)} × {window} s at {float(load):.0%} of {peak} req/s")
fig.tight_layout()
fig.savefig(out / f"{stem}.png", dpi=110)

def d(field):
    return f"{(last[field] - base[field]) / 1024:+.1f}"


table = "\n".join(
    f"| {r['n']} | {r['conns']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} "
    f"| {r['rss'] / 1024:.1f} | {r['heap'] / 1024:.1f} | {r['arenas'] / 1024:.1f} "
    f"| {r['anon'] / 1024:.1f} | {r['file'] / 1024:.1f} | {r['fds']} | {r['threads']} | {r['sessions']} |"
    for r in rows
)
md = f"""# Soak, {datetime.date.today().isoformat()}

`benches/soak/run`: one release node (embedded defaults) on this machine's 2 cores, wrk on the
same machine; mixed native operations of three tenants (encrypt and decrypt with envelope and
hsm keys, generate-data-key, ECDSA sign and verify, HMAC, describe-key).

- Unpaced rate of the mix: **{float(peak):.0f} req/s** ({peak_errors} non-2xx).
- Soak: {len(rows)} windows of {window} s at a target of {target} req/s ({float(load):.0%}):
  {total:,} requests, **{errors} errors** (non-2xx); after warm-up ({warmup} windows) a mean of
  {mean_rps:.0f} req/s, p99 per window from {p99s[0]:.2f} to {p99s[-1]:.2f} ms.
- RSS: {start[0] / 1024:.1f} MiB at start, {base['rss'] / 1024:.1f} MiB after warm-up,
  {last['rss'] / 1024:.1f} MiB at the end: **{growth:+.1f}%** after warm-up (the target: under 10%).
- File descriptors: {start[1]} at start, {base['fds']} after warm-up, {last['fds']} at the end;
  threads {start[2]} → {last['threads']}; open PKCS#11 sessions {start[3]} → {base['sessions']}
  → {last['sessions']}.
- Audit log afterwards (`keyplane audit verify`): {verified}

![soak]({stem}.png)

RSS by where it is (MiB, benches/soak/memory.py): `heap` is glibc's main arena and `arenas`
its other arenas (what SoftHSM2, OpenSSL and SQLite allocate), `anon` every other anonymous
mapping (mimalloc, which keyplane's own allocations use, thread stacks, wasmtime), `files`
mapped files. After warm-up: heap {d('heap')}, arenas {d('arenas')}, anon {d('anon')},
files {d('file')} MiB.

| window | connections | req/s | p50 ms | p99 ms | non-2xx | RSS MiB | heap | arenas | anon | files | fds | threads | sessions |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{table}
"""
(out / f"{stem}.md").write_text(md)
print(md)
