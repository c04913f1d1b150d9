# dilt workflow: `snakemake --cores all` runs the suite named in workflow_config.yaml.
# Stages (rules/*.smk): init -> imp (lth, dilt per partition, colt) -> tickets -> retrain /
# transfer / analyze -> report (results.csv, tables, figures, paper).
import shutil
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "workflow_config.yaml"


def _validated(config):
    """Validate the config before any job runs: one line naming the key, then stop."""
    sys.path.insert(0, workflow.basedir)
    from dilt.config import ConfigError, validate as dilt_validate

    try:
        # the schema check through Snakemake (fills defaults) ...
        validate(config, schema="schemas/config.schema.yaml")
    except Exception:
        pass  # ... reported below as one line instead of Snakemake's multi-line dump
    try:
        return dilt_validate(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


CFG = _validated(config)
SUITE = CFG["suite"]
S = CFG["suites"][SUITE]
R = f"{CFG['results_root']}/{SUITE}"
LOGS = f"logs/{SUITE}"
TAGS = [f"{p['scheme']}{p['n']}" for p in S["partitions"]]
NPART = {f"{p['scheme']}{p['n']}": p["n"] for p in S["partitions"]}
TARGETS = S.get("transfer", {}).get("targets", []) if S.get("transfer", {}).get("enabled", True) else []
ANALYSIS = S.get("analysis", {}).get("enabled", True) and "dilt" in S["methods"]
HAVE_TEX = shutil.which("latexmk") is not None

# every job gets the resolved (validated, defaults filled) config
include: "rules/common.smk"
include: "rules/prune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"

# the report steps are seconds of CPU work: never submit them to a cluster queue
localrules: all, results, tables, figures, paper


rule all:
    default_target: True
    input:
        rules.tables.output,
        rules.figures.output,
        PAPER_PDF if HAVE_TEX else [],


if not HAVE_TEX:
    print(f"note: latexmk not found, so paper/{SUITE}/main.pdf is skipped (everything else is "
          "built); install TeX with `apt-get install latexmk texlive-latex-recommended "
          "texlive-latex-extra texlive-pictures texlive-science` and run `snakemake paper`.",
          file=sys.stderr)
