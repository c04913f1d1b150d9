"""Command line: one subcommand per workflow stage (``python -m dilt STAGE --help``).

Every subcommand takes ``--config`` (the validated config the workflow resolved) and
``--suite``; errors in the config or the inputs end the command with one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="workflow_config.yaml", help="workflow config (YAML)")
    p.add_argument("--suite", default=None, help="suite name (default: the config's `suite`)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")


def _job(p: argparse.ArgumentParser, *, tag: bool = True) -> None:
    _common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--seed", type=int, required=True)
    if tag:
        p.add_argument("--partition", default="full", help="partition tag, e.g. contiguous2 (or full)")
    p.add_argument("--log", default=None, help="JSON-lines log of per-epoch metrics")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dilt", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("validate", help="check the workflow config and print the suite's grid")
    _common(p)

    p = sub.add_parser("init", help="write theta_0")
    _job(p, tag=False)
    p.add_argument("--out", required=True)

    p = sub.add_parser("imp", help="iterative magnitude pruning: lth, dilt (one partition) or colt")
    _job(p)
    p.add_argument("--method", choices=["lth", "dilt", "colt"], required=True)
    p.add_argument("--part", type=int, default=None, help="partition k (1-based), for dilt")
    p.add_argument("--theta0", required=True)
    p.add_argument("--out-dir", required=True)

    p = sub.add_parser("tickets", help="core, specialist and union tickets from DiLT runs")
    _job(p)
    p.add_argument("--runs", nargs="+", required=True, help="the N partition run directories")
    p.add_argument("--out-dir", required=True)

    p = sub.add_parser("retrain", help="retrain masks from theta_0 on the full data and evaluate")
    _job(p)
    p.add_argument("--source", required=True, help="'dense', an IMP run directory or a tickets directory")
    p.add_argument("--theta0", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("transfer", help="train source masks from a new init on a target data set")
    _job(p)
    p.add_argument("--target", required=True)
    p.add_argument("--sources", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("analyze", help="GW distances, layer clusters and block statistics")
    _job(p)
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--theta0", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("report", help="results.csv, tables, figures or the paper")
    _common(p)
    p.add_argument("what", choices=["results", "tables", "figures", "analysis", "paper"])
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dilt import config

    try:
        suite = config.load(args.config, args.suite)
        import torch

        torch.set_num_threads(max(1, args.threads))
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        return _dispatch(args, suite)
    except (config.ConfigError, FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"dilt {args.stage}: error: {msg}", file=sys.stderr)
        return 2


def _dispatch(args, suite) -> int:
    from dilt import jobs

    s = args.stage
    if s == "validate":
        spec = suite.spec
        print(f"suite {suite.name}: models {list(spec['models'])}, datasets {spec['datasets']}, "
              f"partitions {suite.partition_tags()}, sparsities {spec['sparsities']}, "
              f"methods {spec['methods']}, seeds {spec['seeds']}")
    elif s == "init":
        jobs.init(suite, args.model, args.dataset, args.seed, args.out)
    elif s == "imp":
        jobs.imp(suite, args.model, args.dataset, args.seed, args.method, args.partition, args.part,
                 args.theta0, args.out_dir, args.log)
    elif s == "tickets":
        jobs.tickets(suite, args.model, args.dataset, args.seed, args.partition, args.runs, args.out_dir)
    elif s == "retrain":
        jobs.retrain(suite, args.model, args.dataset, args.seed, args.partition, args.source,
                     args.theta0, args.out, args.log)
    elif s == "transfer":
        jobs.transfer(suite, args.model, args.dataset, args.seed, args.partition, args.target,
                      args.sources, args.out, args.log)
    elif s == "analyze":
        jobs.analyze(suite, args.model, args.dataset, args.seed, args.partition, args.runs,
                     args.theta0, args.out)
    elif s == "report":
        from dilt import reporting

        reporting.run(suite, args.what)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
