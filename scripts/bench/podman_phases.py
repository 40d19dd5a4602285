"""Where a `podman build` step's time goes, from podman's debug log.

    python3 scripts/bench/podman_phases.py IMPL=LOG [IMPL=LOG ...]

Each LOG is the stderr of one `podman --log-level debug build`, every line stamped with
the time it came (stamp_lines in scripts/podman-common.sh). A step runs from buildah's
"Parsed Step" to the next one; in between, its container runs until COMMIT, then the
step's changes are found (the diff: with a mount program containers/storage mounts the
parent layer too and compares the two trees, then waits for the next whole second;
natively it reads the upper directory) until "layer ... size is", then the layer is
written into the new image until "finished reading layer", then the next step's
container is created and mounted. Prints, per IMPL, the median of each phase over
every step of every LOG, in milliseconds.
"""

import statistics
import sys

PHASES = [
    ("prepare + RUN", "step", "commit"),
    ("diff (COMMIT to layer size)", "commit", "size"),
    ("write the layer", "size", "applied"),
    ("next container: create and mount", "applied", "next"),
    ("step", "step", "next"),
]


def events(path):
    """(kind, time) of the lines that mark phases, in order."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            stamp, _, msg = line.partition(" ")
            try:
                t = float(stamp)
            except ValueError:
                continue
            if "Parsed Step" in msg:
                out.append(("step", t))
            elif "msg=COMMIT" in msg and "msg=COMMIT " not in msg:
                out.append(("commit", t))
            elif "layer" in msg and "size is" in msg:
                out.append(("size", t))
            elif "finished reading layer" in msg:
                out.append(("applied", t))
    return out


def steps(evs):
    """One dict per step that has a next one: kind -> first time it came in the step."""
    out, cur = [], None
    for kind, t in evs:
        if kind == "step":
            if cur is not None:
                cur["next"] = t
                out.append(cur)
            cur = {"step": t}
        elif cur is not None:
            cur.setdefault(kind, t)
    return out


def main(args):
    if not args or any("=" not in a for a in args):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    per_impl = {}
    for a in args:
        impl, path = a.split("=", 1)
        per_impl.setdefault(impl, []).extend(steps(events(path)))
    impls = list(per_impl)
    print("  %-34s" % "per step, median ms" + "".join("%12s" % i for i in impls))
    for name, a, b in PHASES:
        row = []
        for i in impls:
            v = [s[b] - s[a] for s in per_impl[i] if a in s and b in s]
            row.append("%12.0f" % (statistics.median(v) * 1000) if v else "%12s" % "-")
        print("  %-34s" % name + "".join(row))
    print("  %-34s" % "steps measured" + "".join("%12d" % len(per_impl[i]) for i in impls))


if __name__ == "__main__":
    main(sys.argv[1:])
