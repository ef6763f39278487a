#!/usr/bin/env python3
"""Two profiles side by side, per request: where does A spend what B does not?

    benches/folded-diff.py A.folded RATE_A B.folded RATE_B SECONDS [--self] [--top N]
    e.g. benches/folded-diff.py node.folded 4000 echo.folded 4000 10

A and B are the `.folded` stacks benches/profile-lookup.sh writes next to its SVG
(perf's cpu-clock samples, so each stack's count is nanoseconds of CPU). Each function's
inclusive time (or, with --self, its own time) is divided by the requests of its run
(RATE × SECONDS) and printed in µs per request for A, for B and A − B, the largest
differences first. Generic parameters are stripped from the names, so one function's
instantiations count together.
"""
import argparse
import collections


def strip_generics(frame):
    out, depth = [], 0
    for ch in frame:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def load(path, requests, own):
    """(total, {function: µs per request}) of one folded profile."""
    total, per = 0, collections.Counter()
    with open(path) as f:
        for line in f:
            stack, n = line.rsplit(" ", 1)
            n = int(n)
            total += n
            frames = [strip_generics(x) for x in stack.split(";")]
            for name in [frames[-1]] if own else set(frames):
                per[name] += n
    scale = 1000.0 * requests  # ns → µs per request
    return total / scale, {k: v / scale for k, v in per.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a")
    p.add_argument("rate_a", type=float)
    p.add_argument("b")
    p.add_argument("rate_b", type=float)
    p.add_argument("seconds", type=float)
    p.add_argument("--self", dest="own", action="store_true")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args()
    ta, a = load(args.a, args.rate_a * args.seconds, args.own)
    tb, b = load(args.b, args.rate_b * args.seconds, args.own)
    print(f"µs of CPU per request: A {ta:.1f}, B {tb:.1f}")
    print(f"{'A':>8} {'B':>8} {'A - B':>8}  function")
    names = sorted(set(a) | set(b), key=lambda k: -abs(a.get(k, 0) - b.get(k, 0)))
    for k in names[: args.top]:
        x, y = a.get(k, 0.0), b.get(k, 0.0)
        print(f"{x:8.1f} {y:8.1f} {x - y:+8.1f}  {k[:140]}")


if __name__ == "__main__":
    main()
