"""``python -m nas.zoo``: make, check and list model-zoo releases.

    python -m nas.zoo release RUN_DIR --zoo ZOO_DIR --version V [--top K | --pareto PROFILE ...]
                              [--rank search|final] [--measure PROFILE ...] [--tracking auto|wandb|none]
    python -m nas.zoo verify ZOO_DIR [--profile P ...] [--name NAME ...]
    python -m nas.zoo list [ZOO_DIR]

Bad input (a run without a finished search, a folder that is not a zoo, a network name not in the zoo, a file that
does not match its SHA256SUMS) is one ``error:`` line naming the file and exit status 2; `verify` exits with 1 when
it flags a network.
"""
from __future__ import annotations

import sys

from core.cli import ArgParser
from core.errors import cli_entry


def parse_args(argv: list[str] | None):
    p = ArgParser(prog="python -m nas.zoo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("release", help="release networks of a finished run into a zoo")
    r.add_argument("run_dir", help="run directory of a finished search")
    r.add_argument("--zoo", required=True, metavar="ZOO_DIR", help="the zoo folder (made if new)")
    r.add_argument("--version", required=True, metavar="V", help="release version, e.g. v1 (never overwritten)")
    which = r.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, metavar="K", help="the K best feasible networks (default 1)")
    which.add_argument("--pareto", nargs="+", default=[], metavar="PROFILE",
                       help="the networks on the accuracy-vs-latency front of these profiles (or flops)")
    r.add_argument("--rank", choices=("search", "final"), default="search",
                   help="rank candidates by the search's accuracy (default) or, among the final-trained networks, "
                        "by their final accuracy")
    r.add_argument("--measure", action="append", default=[], metavar="PROFILE",
                   help="also measure the networks on this profile for their cards (repeatable; e.g. a GPU profile "
                        "on a GPU machine, local-cpu-2t, an FPGA simulator)")
    r.add_argument("--tracking", choices=("auto", "wandb", "none"), default="auto",
                   help="log the released networks as W&B model artifacts (offline, under ZOO_DIR/wandb); auto: "
                        "when the search was tracked")
    v = sub.add_parser("verify", help="re-check hashes and ONNX parity, re-measure latency here")
    v.add_argument("zoo", metavar="ZOO_DIR", help="the zoo folder to verify")
    v.add_argument("--profile", action="append", default=[], metavar="P", help="only these profiles (repeatable)")
    v.add_argument("--name", action="append", default=[], metavar="NAME", help="only these networks (repeatable)")
    ls = sub.add_parser("list", help="the networks of a zoo (default: every registered zoo)")
    ls.add_argument("zoo", nargs="?", metavar="ZOO_DIR", help="the zoo folder (default: every registered zoo)")
    for s in (r, v, ls):
        s.error = p.error   # usage errors are one error: line, exit 2
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "release":
        from nas.zoo.release import ReleaseSettings, release

        out = release(ReleaseSettings(run_dir=args.run_dir, zoo=args.zoo, version=args.version, top=args.top,
                                      pareto=args.pareto, measure=args.measure,
                                      tracking=args.tracking, rank=args.rank))
        for n in out["index"]["networks"]:
            if n["version"] == args.version and n["name"] in out["released"] + out["skipped"]:
                lat = "  ".join(f"{p}={ms:.4g}ms ({n['latency_obtained'][p]})" for p, ms in n["latency_ms"].items()
                                if ms is not None)
                print(f"{n['name']}@{n['version']}  accuracy {n['accuracy']:.4f}  {lat}")
        print(f"released {len(out['released'])} network(s), {len(out['skipped'])} already there: {args.zoo}/"
              f"{args.version}" + (f" (W&B release run {out['wandb_id']}: wandb sync {args.zoo}/wandb/offline-run-*)"
                                   if out["wandb_id"] else ""))
        return 0
    if args.command == "verify":
        from nas.zoo.verify import verify

        verdicts = verify(args.zoo, args.profile or None, args.name or None)
        flagged = [v["name"] for v in verdicts if v["flagged"]]
        print(f"{len(verdicts)} network(s) verified, {len(flagged)} flagged" + (f": {', '.join(flagged)}"
                                                                               if flagged else ""))
        return 1 if flagged else 0
    import nas.zoo

    names = nas.zoo.list_models(args.zoo)
    print("\n".join(names) if names else "no networks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
