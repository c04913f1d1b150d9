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
    p.add_argument("--configfile", action="append", default=[], metavar="FILE",
                   help="merged onto --config as Snakemake's --configfile does (repeatable)")

    p = sub.add_parser("doctor", help="check versions, devices, TeX, SLURM, data and disk for a suite")
    p.add_argument("--config", default="workflow_config.yaml", help="workflow config (YAML)")
    p.add_argument("--suite", default=None, help="suite name (default: the config's `suite`)")
    p.add_argument("--configfile", action="append", default=[], metavar="FILE",
                   help="merged onto --config as Snakemake's --configfile does (repeatable)")

    p = sub.add_parser("init", help="write theta_0")
    _job(p, tag=False)
    p.add_argument("--out", required=True)

    from dilt.methods import method_names

    p = sub.add_parser("find", help="find masks with a registered method (lth, dilt, colt, snip, ...)")
    _job(p)
    p.add_argument("--method", choices=method_names(), required=True)
    p.add_argument("--part", type=int, default=None, help="partition k (1-based), for per-partition methods (dilt)")
    p.add_argument("--theta0", required=True)
    p.add_argument("--dense", default=None, help="trained dense weights, for post-training methods")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--provenance", default=None, help="the settings hash the workflow expects (checked)")

    p = sub.add_parser("dense", help="train the dense reference from theta_0 and evaluate it")
    _job(p, tag=False)
    p.add_argument("--theta0", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("tickets", help="core, specialist and union tickets from DiLT runs")
    _job(p)
    p.add_argument("--runs", nargs="+", required=True, help="the N partition run directories")
    p.add_argument("--out-dir", required=True)

    p = sub.add_parser("retrain", help="retrain a mask run's masks from theta_0 on the full data and evaluate")
    _job(p)
    p.add_argument("--source", required=True, help="a mask-run directory (a method's, or the DiLT tickets)")
    p.add_argument("--theta0", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--entry", default=None, help="train only this entry (one training per job)")

    p = sub.add_parser("transfer", help="train source masks from a new init on a target data set")
    _job(p)
    p.add_argument("--target", required=True)
    p.add_argument("--sources", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--entry", default=None, help="train only this entry (one training per job)")

    p = sub.add_parser("analyze", help="GW distances, layer clusters and block statistics")
    _job(p)
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--theta0", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("budget", help="training runs, epochs and GPU-hours of a suite, per experiment")
    _common(p)
    p.add_argument("--configfile", action="append", default=[], metavar="FILE",
                   help="merged onto --config as Snakemake's --configfile does (repeatable)")
    p.add_argument("--throughput", default=None, metavar="JSON",
                   help='measured training throughputs: {"<model>@<side>": images/s}')
    p.add_argument("--detail", action="store_true", help="also print one row per stage, model, data set and method")
    p.add_argument("--csv", default=None, help="write the full table to this CSV file")

    p = sub.add_parser("expected", help="store a suite's key numbers, tolerances and per-seed values")
    p.add_argument("results", help="the suite's results.csv")
    p.add_argument("--out", required=True, help="the expected-results file to write (expected/<suite>.csv)")
    p.add_argument("--z", type=float, default=None, help="tolerance multiplier (default 4)")
    p.add_argument("--floor", type=float, default=None, help="smallest tolerance, a fraction (default 0.005)")

    p = sub.add_parser("compare", help="check a rerun's results.csv against the expected results")
    p.add_argument("results", help="the rerun's results.csv")
    p.add_argument("--expected", default=None, help="expected-results file (default: expected/<suite>.csv)")
    p.add_argument("--exact", action="store_true", help="also check every seed's value bit for bit")
    p.add_argument("--partial", action="store_true",
                   help="a rerun of a slice: expected rows it lacks are not reported")
    p.add_argument("--check-flagged", action="store_true",
                   help="hold flagged keys (bottleneck, collapsed, failed source) and keys whose mask came "
                        "from another IMP round to the tolerance too")
    p.add_argument("--show-not-held", action="store_true",
                   help="list the keys not held to their tolerance (flagged, or another round)")

    p = sub.add_parser("report", help="results.csv, tables, figures or the paper")
    _common(p)
    p.add_argument("what", choices=["results", "tables", "figures", "analysis", "paper"])
    p.add_argument("--records", nargs="*", default=None, help="the records.json files to aggregate")
    p.add_argument("--imp", nargs="*", default=None, help="the imp_summary.json files of the IMP runs")
    p.add_argument("--analyses", nargs="*", default=None, help="the analysis.json files")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stage == "doctor":  # reports a bad config itself, with everything else
        from dilt import doctor

        return doctor.main(args)
    if args.stage in ("expected", "compare"):  # no config: they read only the CSV files named
        return _compare_main(args)
    from dilt import config

    try:
        suite = config.load(args.config, args.suite, overrides=getattr(args, "configfile", []))
        import torch

        torch.set_num_threads(max(1, args.threads))
        from dilt import platform

        # under torchrun: join the process group (a no-op otherwise), over NCCL when the job's
        # recipe trains on CUDA, else gloo
        platform.init_from_env(_job_device(args, suite))
        if torch.cuda.is_available():  # CPU kernels are deterministic already; the switch
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # costs a second of
            torch.use_deterministic_algorithms(True, warn_only=True)     # imports per job
        code = _dispatch(args, suite)
        platform.shutdown()  # under torchrun: leave the process group together
        return code
    except (config.ConfigError, FileNotFoundError, KeyError, ValueError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"dilt {args.stage}: error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # DivergenceError and other run-time failures, in one line
        print(f"dilt {args.stage}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 3


def _job_device(args, suite) -> str:
    """The recipe device of the job's training (a transfer job's: its target data set's)."""
    model = getattr(args, "model", None)
    if model is None:
        return "auto"
    return str(suite.recipe(model, getattr(args, "target", None) or args.dataset).device)


def _compare_main(args) -> int:
    from dilt import compare

    try:
        if args.stage == "expected":
            kw = {k: v for k, v in (("z", args.z), ("floor", args.floor)) if v is not None}
            tab = compare.write_expected(args.results, args.out, **kw)
            print(f"wrote {args.out}: {len(tab)} keys, {int(tab['n'].sum())} rows")
            return 0
        return compare.run_compare(args.results, args.expected, exact=args.exact, partial=args.partial,
                                   check_flagged=args.check_flagged,
                                   show_not_held=args.show_not_held)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"dilt {args.stage}: error: {e}", file=sys.stderr)
        return 2


def _dispatch(args, suite) -> int:
    from dilt import jobs

    s = args.stage
    if s == "validate":
        from dilt import config

        print(config.describe(suite))
    elif s == "init":
        jobs.init(suite, args.model, args.dataset, args.seed, args.out)
    elif s == "find":
        from dilt import config
        from dilt import provenance as prov

        if args.provenance is not None:  # the workflow's hash and the config this job reads agree
            want = prov.digest(prov.find_settings(suite, args.method, args.model, args.dataset,
                                                  args.seed, args.partition, args.part))
            if want != args.provenance:
                raise config.ConfigError(f"--provenance {args.provenance} does not match the config's "
                                         f"settings ({want}); the resolved config is stale: rerun snakemake")
        jobs.find(suite, args.method, args.model, args.dataset, args.seed, args.partition, args.part,
                  args.theta0, args.out_dir, args.dense, args.log)
    elif s == "dense":
        jobs.dense(suite, args.model, args.dataset, args.seed, args.theta0, args.out, args.log)
    elif s == "tickets":
        jobs.tickets(suite, args.model, args.dataset, args.seed, args.partition, args.runs, args.out_dir)
    elif s == "retrain":
        jobs.retrain(suite, args.model, args.dataset, args.seed, args.partition, args.source,
                     args.theta0, args.out, args.log, args.entry)
    elif s == "transfer":
        jobs.transfer(suite, args.model, args.dataset, args.seed, args.partition, args.target,
                      args.sources, args.out, args.log, args.entry)
    elif s == "analyze":
        jobs.analyze(suite, args.model, args.dataset, args.seed, args.partition, args.runs,
                     args.theta0, args.out)
    elif s == "budget":
        from dilt import budget

        measured = budget.load_measured(args.throughput) if args.throughput else None
        df = budget.budget(suite, measured)
        if args.csv:
            df.to_csv(args.csv, index=False)
        print(budget.format_budget(df, suite.name, detail=args.detail))
    elif s == "report":
        from dilt import reporting

        reporting.run(suite, args.what, args.records, args.imp, args.analyses)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
