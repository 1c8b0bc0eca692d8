"""Where a process's resident memory is, from /proc/<pid>/smaps, in kB (for benches/soak/run):
prints "<heap> <arenas> <anon> <file>":

- heap: glibc's main arena (`[heap]`, grown with brk): what the C libraries (SoftHSM2,
  OpenSSL, SQLite) allocate from the main thread, and from any thread once glibc has no
  arena to spare;
- arenas: glibc's other arenas (an anonymous mapping at a 64 MiB boundary, read-write, then
  the rest of its 64 MiB reserved without access): the C libraries' allocations on other
  threads;
- anon: every other anonymous mapping: mimalloc (keyplane's own allocations), thread stacks,
  wasmtime's pools;
- file: mapped files (the executable, shared libraries, SQLite's shared-memory index, and
  wasmtime's memory images, which are memfd files).

An arena that has grown to its whole 64 MiB has no inaccessible rest and is counted as anon;
in the soak the arenas hold a few MiB.
"""

import sys

ARENA = 64 << 20


def regions(pid):
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                if current:
                    yield current
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                path = fields[5] if len(fields) > 5 else ""
                current = dict(lo=lo, hi=hi, perms=fields[1], path=path, rss=0)
            elif first == "Rss:":
                current["rss"] = int(line.split()[1])
    if current:
        yield current


def main(pid):
    heap = arenas = anon = file = 0
    maps = list(regions(pid))
    for i, r in enumerate(maps):
        following = maps[i + 1] if i + 1 < len(maps) else None
        if r["path"] == "[heap]":
            heap += r["rss"]
        elif r["path"] and not r["path"].startswith("["):
            file += r["rss"]
        elif (
            not r["path"]
            and r["lo"] % ARENA == 0
            and r["perms"].startswith("rw")
            and following
            and not following["path"]
            and following["lo"] == r["hi"]
            and following["perms"].startswith("---")
            and following["hi"] - r["lo"] == ARENA
        ):
            arenas += r["rss"]
        else:
            anon += r["rss"]
    print(heap, arenas, anon, file)


if __name__ == "__main__":
    main(sys.argv[1])
