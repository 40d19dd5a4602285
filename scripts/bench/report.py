"""The results of a benchmark (results.tsv) and its tables: medians and ratios."""
import re

NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def isnum(x):
    return isinstance(x, float) or bool(NUMBER.fullmatch(x))


def fmt(x):
    for least, spec in ((100, ".0f"), (10, ".1f"), (1, ".2f")):
        if x >= least:
            return format(x, spec)
    return "0" if x == 0 else format(x, ".2g")


def summary(vals):
    """The values of one metric for one implementation: the median of the numbers
    (a float), FAIL(k/n) if k of the n failed, else the first value, or '-' if none."""
    vals = [v for v in vals if v]
    if not vals:
        return "-"
    fails = vals.count("FAIL")
    if fails:
        return f"FAIL({fails}/{len(vals)})"
    nums = sorted(float(v) for v in vals if isnum(v))
    if not nums:
        return vals[0]
    k = len(nums)
    return nums[k // 2] if k % 2 else (nums[k // 2 - 1] + nums[k // 2]) / 2


def ratio(a, b):
    if not (isnum(a) and isnum(b)):
        return "-"
    a, b = float(a), float(b)
    if b == 0:
        return "1x" if a == 0 else "-"
    return fmt(a / b) + "x"


class Results:
    """Every measurement: WORKLOAD, METRIC, IMPL, REP, VALUE (a number, ok, FAIL, -, ...),
    kept in order and appended to PATH (tab-separated) as they come."""
    def __init__(self, path):
        self.path, self.rows = path, []
        open(path, "w").close()

    def add(self, wl, metric, impl, rep, value):
        row = (wl, metric, impl, str(rep), str(value))
        self.rows.append(row)
        with open(self.path, "a") as f:
            f.write("\t".join(row) + "\n")

    def failed(self):
        return any(r[4] == "FAIL" for r in self.rows)

    def table(self, wl, impls):
        """WL's table: per metric (in the order first recorded) the summary of each
        implementation, and the ratios stratafs/kernel and stratafs/fuse-ovl."""
        vals = {}
        for w, metric, impl, _, v in self.rows:
            if w == wl:
                vals.setdefault(metric, {}).setdefault(impl, []).append(v)
        pairs = [o for o in ("kernel", "fuse-ovl") if "stratafs" in impls and o in impls]
        lines = [f"{wl:<26}" + "".join(f" {i:>10}" for i in impls)
                 + "".join(f" {'s/' + o:>10}" for o in pairs)]
        for metric, by_impl in vals.items():
            s = {i: summary(by_impl.get(i, [])) for i in impls}
            lines.append(f"{metric:<26}" + "".join(f" {fmt(s[i]) if isinstance(s[i], float) else s[i]:>10}"
                                                   for i in impls)
                         + "".join(f" {ratio(s['stratafs'], s[o]):>10}" for o in pairs))
        return "\n".join(lines)
