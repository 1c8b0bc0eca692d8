"""Read `perf script -F ip,sym` (call-graph samples separated by blank lines) on stdin and
print, per subsystem, the share of samples that have at least one frame in it."""
import re
import sys

SUBSYSTEMS = [
    ("TLS (rustls, ring, aws-lc)", r"rustls|aws_lc|ring::|ring_core"),
    ("HTTP (hyper, axum, tower)", r"hyper::|axum::|tower::|h2::"),
    ("JSON (serde_json)", r"serde_json"),
    ("Cedar authorization", r"cedar_policy"),
    ("SQLite and sqlx", r"sqlite3|sqlx"),
    ("PKCS#11 / SoftHSM2", r"cryptoki|SoftHSM|C_Encrypt|C_Decrypt|Botan|OSSL|EVP_"),
    ("audit", r"keyplane::audit"),
    ("authentication", r"authn::|authenticate"),
    ("telemetry (tracing, opentelemetry)", r"tracing|opentelemetry"),
    ("tokio runtime", r"tokio::runtime"),
    ("allocator", r"malloc|free|realloc|_int_"),
    ("kernel", r"\[unknown\]|entry_SYSCALL|syscall|__x64|do_syscall"),
]

samples, current = [], []
for line in sys.stdin:
    line = line.strip()
    if not line:
        if current:
            samples.append(current)
        current = []
        continue
    parts = line.split(None, 1)
    current.append(parts[1] if len(parts) > 1 else parts[0])
if current:
    samples.append(current)

total = len(samples) or 1
for name, pattern in SUBSYSTEMS:
    rx = re.compile(pattern)
    hit = sum(1 for s in samples if any(rx.search(f) for f in s))
    print(f"{100 * hit / total:6.1f}%  {name}")
print(f"{total} samples")
